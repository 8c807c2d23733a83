//! The bookstore demo's back: `POST /reserve` with a book's name answers its stock, read
//! from state store `statestore` under the book's name.

use plinth_fn::{Request, Response, state};

fn stock(req: Request) -> Result<Response, plinth_fn::Error> {
    let name = req.text();
    Ok(match state::get("statestore", &name)? {
        Some(stock) => Response::bytes("text/plain", stock),
        None => Response::text(format!("no book named {name:?}")).with_status(404),
    })
}

plinth_fn::http_handler!(stock);
