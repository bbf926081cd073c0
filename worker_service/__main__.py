"""``python -m worker_service`` and ``wsi-worker``: run a worker. The pool's
fork server is started first, so that it imports the segmentation stack
while this process imports it too (``pipeline.fork_server``)."""

from worker_service.pipeline import fork_server


def main() -> None:
    fork_server.start()
    from worker_service.server.main import main as serve  # the whole stack: after the start

    serve()


if __name__ == "__main__":
    main()
