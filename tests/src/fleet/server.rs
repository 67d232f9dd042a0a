//! The HTTP side of a simulated node: one listener, one task per connection, and the fault
//! knobs applied per request.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::{Fault, NodeShared};

/// The Content-Type client_golang's promhttp answers a plain scrape with (text format 0.0.4;
/// recent versions append the name escaping scheme).
pub const EXPOSITION_CONTENT_TYPE: &str =
    "text/plain; version=0.0.4; charset=utf-8; escaping=underscores";

/// Go's net/http buffers this much of a response before it switches to chunked transfer
/// encoding; below it the response gets a Content-Length, as from a real ipamd.
const GO_BUFFER_BEFORE_CHUNKING: usize = 2_048;

/// The size of each chunk written for a large body.
const CHUNK_BYTES: usize = 4_096;

/// The body promhttp sends when gathering fails.
const GATHER_ERROR_BODY: &str = "An error has occurred while serving metrics:\n\n\
    collected metric \"awscni_assigned_ip_addresses\" { gauge:<value:7 > } was collected before with the same name and label values\n";

/// A 200 answer that is not an exposition: an HTML error page from something in between,
/// followed by a broken sample line, so every strict parser must reject it.
const GARBAGE_BODY: &str = "<html><head><title>502 Bad Gateway</title></head>\n\
    <body><center><h1>502 Bad Gateway</h1></center></body></html>\n\
    {\"garbage\": true}\n\
    awscni_assigned_ip_addresses{cidr=\"10.0.1.17/32 7\n";

/// Serves one node on its own listener until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, node: Arc<NodeShared>) {
    accept_connections(listener, move |request| respond(Arc::clone(&node), request)).await;
}

/// The nodes of a [`super::NodeListeners::Shared`] fleet by the address each stands for.
pub(crate) type NodesByAddress = std::collections::HashMap<std::net::SocketAddr, Arc<NodeShared>>;

/// Serves every node of a fleet from one listener: each request goes to the node whose
/// `IP:port` its Host header names. Runs until the task is aborted, like [`serve`].
pub(crate) async fn serve_shared(listener: TcpListener, nodes: Arc<NodesByAddress>) {
    accept_connections(listener, move |request: Request<Incoming>| {
        let node = request
            .headers()
            .get(http::header::HOST)
            .and_then(|host| host.to_str().ok())
            .and_then(|host| host.parse::<std::net::SocketAddr>().ok())
            .and_then(|address| nodes.get(&address).cloned());
        async move {
            match node {
                Some(node) => respond(node, request).await,
                // No node has that address: a real client would have found nothing
                // listening there.
                None => Ok(plain(
                    StatusCode::MISDIRECTED_REQUEST,
                    "no simulated node has the address in the Host header\n",
                )),
            }
        }
    })
    .await;
}

/// Accepts connections until the task is aborted and answers each request with `handle`.
/// Aborting drops the connection set, which aborts every connection task too, including
/// ones stuck in a hung request.
async fn accept_connections<H, F>(listener: TcpListener, handle: H)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: Future<Output = Result<Response<ChunkedBody>, Infallible>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Usually EMFILE under a huge benchmark; back off instead of spinning.
                let address = listener.local_addr().ok();
                tracing::debug!(?address, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Reap finished connections so the set does not grow for the life of the fleet.
        while connections.try_join_next().is_some() {}
        // Go's net/http sets TCP_NODELAY on every accepted connection; failing to is harmless.
        let _ = stream.set_nodelay(true);
        let handle = handle.clone();
        connections.spawn(async move {
            let service = service_fn(handle);
            // A client hanging up mid-response is normal (timeouts, fault tests); ignore it.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn respond(
    node: Arc<NodeShared>,
    request: Request<Incoming>,
) -> Result<Response<ChunkedBody>, Infallible> {
    if request.uri().path() != "/metrics" {
        return Ok(plain(StatusCode::NOT_FOUND, "404 page not found\n"));
    }
    node.count_request();
    match node.current_fault() {
        Fault::None => Ok(exposition(node.serve_exposition(None))),
        Fault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Ok(exposition(node.serve_exposition(None)))
        }
        Fault::Hang => std::future::pending().await,
        Fault::Http500 => Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, GATHER_ERROR_BODY)),
        Fault::Garbage => Ok(plain(StatusCode::OK, GARBAGE_BODY)),
        Fault::Oversized(size) => Ok(exposition(node.serve_exposition(Some(size)))),
        Fault::ExtremeValues => {
            let mut body = node.serve_exposition(None);
            super::exposition::set_extreme_values(&mut body);
            Ok(exposition(body))
        }
        Fault::SlowBody { size, over } => {
            let mut response = exposition(node.serve_exposition(Some(size)));
            response.body_mut().pace(over);
            Ok(response)
        }
        Fault::ManySeries(count) => {
            let mut body = node.serve_exposition(None);
            let nonce = UNIQUE_SERIES_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            super::exposition::unique_series(&mut body, count, nonce);
            Ok(exposition(body))
        }
    }
}

/// Makes the label values of every `ManySeries` answer unique in the process.
static UNIQUE_SERIES_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn exposition(body: String) -> Response<ChunkedBody> {
    let mut response = Response::new(ChunkedBody::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(EXPOSITION_CONTENT_TYPE),
    );
    response
}

fn plain(status: StatusCode, body: &'static str) -> Response<ChunkedBody> {
    let mut response = Response::new(ChunkedBody::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A body sent the way Go's net/http sends a handler's output: with a Content-Length when
/// small, chunked in pieces when large, so clients meet both framings.
pub(crate) struct ChunkedBody {
    remaining: Bytes,
    exact_length: Option<u64>,
    /// With [`ChunkedBody::pace`]: the wait before each chunk, and the wait in progress.
    pause: Option<(Duration, Pin<Box<tokio::time::Sleep>>)>,
}

impl ChunkedBody {
    fn new(body: Bytes) -> Self {
        let exact_length = (body.len() <= GO_BUFFER_BEFORE_CHUNKING).then_some(body.len() as u64);
        Self {
            remaining: body,
            exact_length,
            pause: None,
        }
    }

    /// Spreads the chunks evenly over `total`: each waits its share before it is sent.
    fn pace(&mut self, total: Duration) {
        let chunks = self.remaining.len().div_ceil(CHUNK_BYTES).max(1);
        let each = total / u32::try_from(chunks).unwrap_or(u32::MAX);
        self.pause = Some((each, Box::pin(tokio::time::sleep(each))));
    }
}

impl Body for ChunkedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.remaining.is_empty() {
            return Poll::Ready(None);
        }
        if let Some((each, sleep)) = this.pause.as_mut() {
            if sleep.as_mut().poll(context).is_pending() {
                return Poll::Pending;
            }
            let next = tokio::time::Instant::now() + *each;
            sleep.as_mut().reset(next);
        }
        let size = this.remaining.len().min(CHUNK_BYTES);
        Poll::Ready(Some(Ok(Frame::data(this.remaining.split_to(size)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    #[tokio::test]
    async fn a_paced_body_arrives_whole_and_no_sooner_than_asked() {
        let body = Bytes::from(vec![b'#'; 10 * CHUNK_BYTES]);
        let mut paced = ChunkedBody::new(body.clone());
        paced.pace(Duration::from_millis(300));
        let started = tokio::time::Instant::now();
        let received = paced.collect().await.expect("infallible").to_bytes();
        assert_eq!(received, body);
        // Ten chunks of 30 ms each: at least 300 ms however fast the machine is.
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
