//! A test app serving Dapr's `AppCallback` over gRPC (and not its health-check service, so
//! Plinth must treat UNIMPLEMENTED there as healthy). It records invocations, events and
//! binding events on one channel.

use dapr::dapr::proto::common::v1 as common;
use dapr::dapr::proto::runtime::v1 as dpb;
use dpb::app_callback_server::{AppCallback, AppCallbackServer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// What the app received.
#[derive(Debug)]
pub(crate) enum Call {
    Invoke(common::InvokeRequest, tonic::metadata::MetadataMap),
    Event(dpb::TopicEventRequest),
    Binding(dpb::BindingEventRequest),
    Bulk(dpb::TopicEventBulkRequest),
}

struct App {
    subscriptions: Vec<dpb::TopicSubscription>,
    bindings: Vec<String>,
    binding_reply: dpb::BindingEventResponse,
    tx: mpsc::UnboundedSender<Call>,
}

#[tonic::async_trait]
impl AppCallback for App {
    async fn on_invoke(
        &self,
        request: Request<common::InvokeRequest>,
    ) -> Result<Response<common::InvokeResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        if req.method == "fail" {
            return Err(Status::permission_denied("not you"));
        }
        let answer = format!(
            "{} {} {}",
            req.method,
            req.http_extension.as_ref().map(|h| h.verb).unwrap_or(-1),
            req.http_extension
                .as_ref()
                .map(|h| h.querystring.clone())
                .unwrap_or_default()
        );
        let _ = self.tx.send(Call::Invoke(req, metadata));
        let mut response = Response::new(common::InvokeResponse {
            data: Some(prost_types::Any {
                type_url: String::new(),
                value: answer.into_bytes(),
            }),
            content_type: "text/plain".into(),
        });
        response
            .metadata_mut()
            .insert("x-from-app", "grpc".parse().expect("ascii"));
        Ok(response)
    }

    async fn list_topic_subscriptions(
        &self,
        _request: Request<()>,
    ) -> Result<Response<dpb::ListTopicSubscriptionsResponse>, Status> {
        Ok(Response::new(dpb::ListTopicSubscriptionsResponse {
            subscriptions: self.subscriptions.clone(),
        }))
    }

    async fn on_topic_event(
        &self,
        request: Request<dpb::TopicEventRequest>,
    ) -> Result<Response<dpb::TopicEventResponse>, Status> {
        let _ = self.tx.send(Call::Event(request.into_inner()));
        Ok(Response::new(dpb::TopicEventResponse { status: 0 }))
    }

    async fn list_input_bindings(
        &self,
        _request: Request<()>,
    ) -> Result<Response<dpb::ListInputBindingsResponse>, Status> {
        Ok(Response::new(dpb::ListInputBindingsResponse {
            bindings: self.bindings.clone(),
        }))
    }

    async fn on_binding_event(
        &self,
        request: Request<dpb::BindingEventRequest>,
    ) -> Result<Response<dpb::BindingEventResponse>, Status> {
        let _ = self.tx.send(Call::Binding(request.into_inner()));
        Ok(Response::new(self.binding_reply.clone()))
    }

    async fn on_bulk_topic_event(
        &self,
        request: Request<dpb::TopicEventBulkRequest>,
    ) -> Result<Response<dpb::TopicEventBulkResponse>, Status> {
        let req = request.into_inner();
        // Entries whose event data is `"drop"` are dropped; the rest succeed.
        let statuses = req
            .entries
            .iter()
            .map(|e| {
                let drop = matches!(
                    &e.event,
                    Some(dpb::topic_event_bulk_request_entry::Event::CloudEvent(ce)) if ce.data == br#""drop""#
                );
                dpb::TopicEventBulkResponseEntry {
                    entry_id: e.entry_id.clone(),
                    status: if drop { 2 } else { 0 },
                }
            })
            .collect();
        let _ = self.tx.send(Call::Bulk(req));
        Ok(Response::new(dpb::TopicEventBulkResponse { statuses }))
    }

    async fn on_job_event(
        &self,
        _request: Request<dpb::JobEventRequest>,
    ) -> Result<Response<dpb::JobEventResponse>, Status> {
        Err(Status::unimplemented("no jobs"))
    }
}

/// The running app.
pub(crate) struct DaprApp {
    pub(crate) port: u16,
    rx: mpsc::UnboundedReceiver<Call>,
}

impl DaprApp {
    /// Start an app listing `subscriptions` and the input `bindings`, answering binding
    /// events with `binding_reply`.
    pub(crate) async fn start(
        subscriptions: Vec<dpb::TopicSubscription>,
        bindings: Vec<String>,
        binding_reply: dpb::BindingEventResponse,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the app");
        let port = listener.local_addr().expect("app address").port();
        let app = App {
            subscriptions,
            bindings,
            binding_reply,
            tx,
        };
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(AppCallbackServer::new(app))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await;
        });
        Self { port, rx }
    }

    /// The next call, within the test's bound.
    pub(crate) async fn next(&mut self) -> Call {
        tokio::time::timeout(super::support::WAIT, self.rx.recv())
            .await
            .expect("the app got no call in time")
            .expect("the app stopped")
    }
}
