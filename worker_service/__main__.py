"""``python -m worker_service``: run a worker."""

from worker_service.server.main import main

if __name__ == "__main__":
    main()
