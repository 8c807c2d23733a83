//! The bookstore demo's front: `GET /?name=book1` asks `function2` for the book's stock
//! (through Plinth's invoke, in-process) and answers `There are 100 inventories for book1.`

use plinth_fn::{Request, Response, invoke};

fn books(req: Request) -> Response {
    let Some(name) = req.query_param("name").filter(|n| !n.is_empty()) else {
        return Response::text("the query parameter `name` is missing").with_status(400);
    };
    let answer = match invoke::call("function2", "reserve", name.as_bytes()) {
        Ok(answer) => answer,
        Err(e) => {
            return Response::text(format!("function2 could not be reached: {e}")).with_status(502);
        }
    };
    if answer.status != 200 {
        return Response::text(answer.text()).with_status(answer.status);
    }
    Response::text(format!(
        "There are {} inventories for {name}.",
        answer.text()
    ))
}

plinth_fn::http_handler!(books);
