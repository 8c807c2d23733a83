//! A pub/sub subscriber: each event (a CloudEvent POSTed by Plinth) is kept whole in state
//! store `statestore` under `events-{topic}-{n}`, `n` counting from 1 per topic (sequencer
//! `sequencer`, STRONG). Answers `{"status":"SUCCESS"}`, or 500 when it could not keep it (so
//! Plinth redelivers).

use plinth_fn::sequencer::{self, Increment};
use plinth_fn::{Request, Response, state};

fn keep(req: Request) -> Response {
    let topic = req.header("topic").unwrap_or("unknown").to_string();
    let key = format!("events-{topic}");
    let kept = sequencer::next_id("sequencer", &key, Increment::Strong)
        .and_then(|n| state::set("statestore", &format!("{key}-{n}"), &req.body));
    match kept {
        Ok(()) => Response::bytes("application/json", br#"{"status":"SUCCESS"}"#.to_vec()),
        Err(e) => Response::text(format!("not kept: {e}")).with_status(500),
    }
}

plinth_fn::http_handler!(keep);
