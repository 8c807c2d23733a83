"""Calls to Plinth's Layotto API (`spec.proto.runtime.v1.Runtime`) from Python, for what Dapr's
API cannot do: writing configuration items (Dapr's API only reads and subscribes; the
in-memory configuration store is written through Layotto's SaveConfiguration).

No protos are written or generated here: the message types come from Plinth itself, through
gRPC server reflection (`grpc.reflection.v1`, which Plinth serves on the same listeners).
grpcio-reflection ships the reflection messages under `v1alpha`; v1's are the same messages
on the wire, so they are sent to v1's method path.
"""

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from grpc_reflection.v1alpha import reflection_pb2

REFLECTION = '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo'
SERVICE = 'spec.proto.runtime.v1.Runtime'


class Layotto:
    def __init__(self, address, api_token=None):
        self._channel = grpc.insecure_channel(address)
        self._metadata = (('dapr-api-token', api_token),) if api_token else ()
        self._pool = descriptor_pool.DescriptorPool()
        self._reflect = self._channel.stream_stream(
            REFLECTION,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        self._load(file_containing_symbol=SERVICE)

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _ask(self, **request):
        (response,) = self._reflect(
            iter([reflection_pb2.ServerReflectionRequest(**request)]),
            metadata=self._metadata,
            timeout=10,
        )
        if response.HasField('error_response'):
            raise RuntimeError(f'reflection: {response.error_response.error_message}')
        return [
            descriptor_pb2.FileDescriptorProto.FromString(raw)
            for raw in response.file_descriptor_response.file_descriptor_proto
        ]

    def _load(self, **request):
        """Add the answered files to the pool, dependencies first; ask for any dependency
        the answer left out."""
        pending = {f.name: f for f in self._ask(**request)}

        def add(name):
            if name not in pending:
                try:
                    self._pool.FindFileByName(name)
                    return
                except KeyError:
                    pending.update({f.name: f for f in self._ask(file_by_filename=name)})
            proto = pending.pop(name)
            for dependency in proto.dependency:
                add(dependency)
            self._pool.Add(proto)

        while pending:
            add(next(iter(pending)))

    def call(self, method, request):
        """Call Runtime/<method> with `request` (a dict in proto JSON form); answer the
        response as a dict."""
        descriptor = self._pool.FindServiceByName(SERVICE).FindMethodByName(method)
        request_type = message_factory.GetMessageClass(descriptor.input_type)
        response_type = message_factory.GetMessageClass(descriptor.output_type)
        rpc = self._channel.unary_unary(
            f'/{SERVICE}/{method}',
            request_serializer=request_type.SerializeToString,
            response_deserializer=response_type.FromString,
        )
        response = rpc(
            json_format.ParseDict(request, request_type()), metadata=self._metadata, timeout=10
        )
        return json_format.MessageToDict(response)

    def save_configuration(self, store_name, items):
        """Write items {key: content} for the sidecar's app, without group or label: the
        items Dapr's API reads."""
        self.call(
            'SaveConfiguration',
            {
                'storeName': store_name,
                'items': [{'key': k, 'content': v} for k, v in items.items()],
            },
        )

    def delete_configuration(self, store_name, keys):
        self.call('DeleteConfiguration', {'storeName': store_name, 'keys': list(keys)})
