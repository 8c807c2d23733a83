use plinth_core::ErrorKind;

use super::*;

fn spec(pairs: &[(&str, &str)]) -> ComponentSpec {
    pairs.iter().fold(
        ComponentSpec::new("pubsub", "pubsub.in-memory"),
        |s, (k, v)| s.with_metadata(*k, *v),
    )
}

fn scopes(pairs: &[(&str, &str)]) -> TopicScopes {
    TopicScopes::from_spec(&spec(pairs)).expect("valid scopes")
}

/// The topics of `all` that each app may use, row by row, as Dapr's documentation tables.
fn table(s: &TopicScopes, access: Access, apps: &[&str], all: &[&str]) -> Vec<String> {
    apps.iter()
        .map(|app| {
            let ok: Vec<&str> = all
                .iter()
                .copied()
                .filter(|t| s.check(access, "pubsub", app, t).is_ok())
                .collect();
            format!("{app}: {}", ok.join(","))
        })
        .collect()
}

#[test]
fn no_scopes_allow_everything() {
    let s = scopes(&[("maxQueueLength", "10")]);
    assert_eq!(s, TopicScopes::default());
    assert!(s.check(Access::Publish, "pubsub", "any", "topic").is_ok());
    assert!(s.check(Access::Subscribe, "pubsub", "any", "topic").is_ok());
}

// The examples of Dapr's "Scope Pub/sub topic access" page, with their tables.

#[test]
fn example_scope_topic_access() {
    let s = scopes(&[
        (PUBLISHING_SCOPES, "app1=topic1;app2=topic2,topic3;app3="),
        (SUBSCRIPTION_SCOPES, "app2=;app3=topic1"),
    ]);
    let (apps, topics) = (["app1", "app2", "app3"], ["topic1", "topic2", "topic3"]);
    assert_eq!(
        table(&s, Access::Publish, &apps, &topics),
        ["app1: topic1", "app2: topic2,topic3", "app3: "]
    );
    assert_eq!(
        table(&s, Access::Subscribe, &apps, &topics),
        ["app1: topic1,topic2,topic3", "app2: ", "app3: topic1"]
    );
}

#[test]
fn example_allowed_topics() {
    let s = scopes(&[(ALLOWED_TOPICS, "topic1,topic2,topic3")]);
    assert_eq!(
        table(
            &s,
            Access::Publish,
            &["app1"],
            &["topic1", "topic3", "topic4"]
        ),
        ["app1: topic1,topic3"]
    );
    let err = s
        .check(Access::Subscribe, "pubsub", "app1", "topic4")
        .expect_err("not allowed");
    assert_eq!(err.kind(), ErrorKind::PermissionDenied);
    assert_eq!(
        err.message(),
        "subscribing to topic \"topic4\" is not allowed for app id \"app1\" on pub/sub \"pubsub\": allowedTopics does not list it"
    );
}

#[test]
fn example_allowed_topics_with_scopes() {
    let s = scopes(&[
        (ALLOWED_TOPICS, "A,B"),
        (PUBLISHING_SCOPES, "app1=A"),
        (SUBSCRIPTION_SCOPES, "app1=;app2=A"),
    ]);
    let (apps, topics) = (["app1", "app2", "app3"], ["A", "B", "C"]);
    assert_eq!(
        table(&s, Access::Publish, &apps, &topics),
        ["app1: A", "app2: A,B", "app3: A,B"]
    );
    assert_eq!(
        table(&s, Access::Subscribe, &apps, &topics),
        ["app1: ", "app2: A", "app3: A,B"]
    );
}

#[test]
fn example_protected_topics() {
    let s = scopes(&[
        (PROTECTED_TOPICS, "A,B"),
        (PUBLISHING_SCOPES, "app1=A,B;app2=B"),
        (SUBSCRIPTION_SCOPES, "app1=A,B;app2=B"),
    ]);
    let (apps, topics) = (["app1", "app2", "app3"], ["A", "B", "C"]);
    for access in [Access::Publish, Access::Subscribe] {
        assert_eq!(
            table(&s, access, &apps, &topics),
            ["app1: A,B", "app2: B", "app3: C"]
        );
    }
    let err = s
        .check(Access::Publish, "pubsub", "app3", "A")
        .expect_err("protected");
    assert!(
        err.message().contains("\"app3\"")
            && err.message().contains("\"A\"")
            && err.message().contains("protectedTopics"),
        "{err}"
    );
}

#[test]
fn keys_ignore_case_and_spaces_and_entries_add_up() {
    let s = scopes(&[
        ("PublishingScopes", " app1 = t1 , t2 ; app1=t3;; "),
        ("ALLOWEDTOPICS", "t1, t3 ,"),
    ]);
    assert_eq!(
        table(&s, Access::Publish, &["app1", "app2"], &["t1", "t2", "t3"]),
        ["app1: t1,t3", "app2: t1,t3"]
    );
}

#[test]
fn malformed_values_name_the_field() {
    for (key, value, expected) in [
        (
            PUBLISHING_SCOPES,
            "app1",
            "not of the form app=topic1,topic2",
        ),
        (SUBSCRIPTION_SCOPES, "app1=t1;app2:t2", "\"app2:t2\""),
        (PUBLISHING_SCOPES, "=t1", "names no app id"),
        (PUBLISHING_SCOPES, "app1=t1=app2", "more than one '='"),
    ] {
        let err = TopicScopes::from_spec(&spec(&[(key, value)])).expect_err(value);
        let msg = err.to_string();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(
            msg.contains(&format!("metadata.{key}")) && msg.contains(expected),
            "{msg}"
        );
    }
    let twice = TopicScopes::from_spec(&spec(&[("allowedTopics", "a"), ("allowedtopics", "b")]))
        .expect_err("two spellings");
    assert!(twice.to_string().contains("given twice"), "{twice}");
}

#[test]
fn strip_removes_only_the_scope_keys() {
    let full = spec(&[
        ("publishingScopes", "a=t"),
        ("SUBSCRIPTIONSCOPES", "a=t"),
        ("allowedTopics", "t"),
        ("protectedTopics", "t"),
        ("maxQueueLength", "10"),
    ]);
    let stripped = TopicScopes::strip(&full);
    let keys: Vec<&String> = stripped.metadata.keys().collect();
    assert_eq!(keys, ["maxQueueLength"]);
    assert_eq!(stripped.name, full.name);
}
