//! Exercises the draft WASI interfaces Plinth serves, answering one `name=value` line per
//! probe so that tests can check each.
//!
//! - `/kv?store=S`: `wasi:keyvalue/store` on bucket `S` (default `statestore`): set, get,
//!   exists, delete, list-keys, and opening a store that does not exist. Leaves
//!   `wasi-kept=kept` behind.
//! - `/batch`: `wasi:keyvalue/batch`: set-many, get-many, delete-many.
//! - `/incr?key=K&delta=N`: `wasi:keyvalue/atomics/increment`; answers the new value.
//! - `/config?key=K`: `wasi:config` get and get-all, through each version Plinth serves.

use std::fmt::Write as _;

use plinth_fn::{Request, Response};

wit_bindgen::generate!({
    inline: "
        package plinth:fixture-wasi;

        world fixture {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            import wasi:keyvalue/batch@0.2.0-draft;
            import wasi:config/store@0.2.0-draft;
            import wasi:config/runtime@0.2.0-draft;
            import wasi:config/store@0.2.0-rc.1;
        }
    ",
    path: [
        "../../../wit/deps/keyvalue",
        "../../../wit/deps/config",
        "../../../wit/deps/config-rc1",
    ],
    world: "plinth:fixture-wasi/fixture",
    generate_all,
});

use wasi::keyvalue::{atomics, batch, store};

fn route(req: Request) -> Response {
    match req.path.as_str() {
        "/kv" => kv(&req),
        "/batch" => batch_ops(),
        "/incr" => incr(&req),
        "/config" => config(&req),
        other => Response::text(format!("no route {other}")).with_status(404),
    }
}

fn kv_err(e: &store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "err:no-such-store".into(),
        store::Error::AccessDenied => "err:access-denied".into(),
        store::Error::Other(m) => format!("err:other:{m}"),
    }
}

fn show<T>(r: Result<T, store::Error>, ok: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => ok(v),
        Err(e) => kv_err(&e),
    }
}

fn text(v: Option<Vec<u8>>) -> String {
    match v {
        Some(v) => String::from_utf8_lossy(&v).into_owned(),
        None => "none".into(),
    }
}

fn open(req: &Request) -> Result<store::Bucket, store::Error> {
    store::open(
        &req.query_param("store")
            .unwrap_or_else(|| "statestore".into()),
    )
}

fn kv(req: &Request) -> Response {
    let mut out = String::new();
    let mut line = |name: &str, value: String| {
        let _ = writeln!(out, "{name}={value}");
    };
    line(
        "unknown-store",
        show(store::open("no-such-store"), |_| "opened".into()),
    );
    let bucket = match open(req) {
        Ok(b) => b,
        Err(e) => {
            line("open", kv_err(&e));
            return Response::text(out);
        }
    };
    line("open", "ok".into());
    line("set", show(bucket.set("wasi-key", b"v1"), |()| "ok".into()));
    line("get", show(bucket.get("wasi-key"), text));
    line("exists", show(bucket.exists("wasi-key"), |b| b.to_string()));
    line("delete", show(bucket.delete("wasi-key"), |()| "ok".into()));
    line(
        "exists-after-delete",
        show(bucket.exists("wasi-key"), |b| b.to_string()),
    );
    line("get-after-delete", show(bucket.get("wasi-key"), text));
    line(
        "delete-missing",
        show(bucket.delete("wasi-key"), |()| "ok".into()),
    );
    line(
        "kept",
        show(bucket.set("wasi-kept", b"kept"), |()| "ok".into()),
    );
    line(
        "list-keys",
        show(bucket.list_keys(None), |r| r.keys.join(",")),
    );
    Response::text(out)
}

fn batch_ops() -> Response {
    let mut out = String::new();
    let mut line = |name: &str, value: String| {
        let _ = writeln!(out, "{name}={value}");
    };
    let bucket = match store::open("statestore") {
        Ok(b) => b,
        Err(e) => return Response::text(format!("open={}", kv_err(&e))),
    };
    let pairs = |r: Vec<Option<(String, Vec<u8>)>>| {
        r.into_iter()
            .map(|p| match p {
                Some((k, v)) => format!("{k}:{}", String::from_utf8_lossy(&v)),
                None => "none".into(),
            })
            .collect::<Vec<_>>()
            .join(",")
    };
    let values = [
        ("batch-1".to_string(), b"one".to_vec()),
        ("batch-2".to_string(), b"two".to_vec()),
    ];
    line(
        "set-many",
        show(batch::set_many(&bucket, &values), |()| "ok".into()),
    );
    let keys = ["batch-1".to_string(), "batch-2".into(), "batch-3".into()];
    line("get-many", show(batch::get_many(&bucket, &keys), pairs));
    line(
        "delete-many",
        show(batch::delete_many(&bucket, &keys[..1]), |()| "ok".into()),
    );
    line(
        "get-many-after-delete",
        show(batch::get_many(&bucket, &keys), pairs),
    );
    Response::text(out)
}

fn incr(req: &Request) -> Response {
    let key = req.query_param("key").unwrap_or_else(|| "counter".into());
    let delta = req
        .query_param("delta")
        .and_then(|d| d.parse().ok())
        .unwrap_or(1);
    let result = open(req).and_then(|b| atomics::increment(&b, &key, delta));
    match result {
        Ok(n) => Response::text(n.to_string()),
        Err(e) => Response::text(kv_err(&e)).with_status(500),
    }
}

fn config(req: &Request) -> Response {
    use wasi::config0_2_0_draft::runtime as draft_runtime;
    use wasi::config0_2_0_draft::store as draft;
    use wasi::config0_2_0_rc_1::store as rc1;

    let key = req.query_param("key").unwrap_or_default();
    let value = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    let all = |v: Vec<(String, String)>| {
        v.into_iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut out = String::new();
    let mut line = |name: &str, value: String| {
        let _ = writeln!(out, "{name}={value}");
    };
    line(
        "draft.get",
        draft::get(&key).map_or_else(|e| format!("err:{e:?}"), value),
    );
    line(
        "draft.get-all",
        draft::get_all().map_or_else(|e| format!("err:{e:?}"), all),
    );
    line(
        "runtime.get",
        draft_runtime::get(&key).map_or_else(|e| format!("err:{e:?}"), value),
    );
    line(
        "runtime.get-all",
        draft_runtime::get_all().map_or_else(|e| format!("err:{e:?}"), all),
    );
    line(
        "rc1.get",
        rc1::get(&key).map_or_else(|e| format!("err:{e:?}"), value),
    );
    line(
        "rc1.get-all",
        rc1::get_all().map_or_else(|e| format!("err:{e:?}"), all),
    );
    Response::text(out)
}

plinth_fn::http_handler!(route);
