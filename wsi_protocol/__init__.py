"""The wire protocol of the system, shared by every side of it: the generated
gRPC code of the public scheduler API (``scheduler/v1``) and of the worker API
the scheduler calls (``worker/v1``), both from ``protos/`` by ``make proto``;
the metadata and status conventions (``metadata``, ``status``); protobuf to
JSON (``json_format``).

Imports point one way: services, clients and the gateway import this package;
it imports none of them."""
