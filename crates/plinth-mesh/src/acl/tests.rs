//! Each rule of the access-control semantics, as pure logic.

use serde_json::json;

use super::*;

fn caller(app: &str) -> Identity {
    Identity::new("public", "default", app)
}

fn acl(spec: serde_json::Value) -> AccessControl {
    AccessControl::from_spec(&spec).expect("valid spec")
}

fn spec_error(spec: serde_json::Value) -> String {
    AccessControl::from_spec(&spec)
        .expect_err("invalid spec")
        .message()
        .to_owned()
}

/// Dapr's documented example, reused by several tests.
fn example() -> AccessControl {
    acl(json!({
        "defaultAction": "deny",
        "trustDomain": "public",
        "policies": [{
            "appId": "app1",
            "defaultAction": "allow",
            "trustDomain": "public",
            "namespace": "default",
            "operations": [
                { "name": "/op1", "httpVerb": ["POST", "GET"], "action": "deny" },
                { "name": "/op2/*", "httpVerb": ["*"], "action": "allow" }
            ]
        }]
    }))
}

#[test]
fn no_section_or_an_empty_one_allows_everything() {
    for spec in [json!(null), json!({})] {
        let acl = acl(spec);
        assert!(!acl.is_configured());
        let d = acl.decide(&caller("anyone"), Some("DELETE"), "/anything");
        assert_eq!(
            d,
            Decision {
                action: Action::Allow,
                by: DecidedBy::Unconfigured
            }
        );
    }
}

#[test]
fn global_default_defaults_to_deny_only_when_policies_exist() {
    let only_td = acl(json!({ "trustDomain": "corp" }));
    assert!(only_td.is_configured());
    assert_eq!(only_td.trust_domain(), "corp");
    assert!(only_td.allows(&caller("x"), Some("GET"), "/a"));

    let with_policy = acl(json!({
        "policies": [{ "appId": "app1", "namespace": "default" }]
    }));
    assert!(!with_policy.allows(&caller("x"), Some("GET"), "/a"));
    assert_eq!(with_policy.trust_domain(), "public");
    // app1 has a policy without a default and without operations: the global deny.
    let d = with_policy.decide(&caller("app1"), Some("GET"), "/a");
    assert_eq!(d.by, DecidedBy::Global);
    assert!(!d.allowed());
}

#[test]
fn callers_without_a_policy_get_the_global_default() {
    let acl = example();
    let d = acl.decide(&caller("app2"), Some("GET"), "/op2/x");
    assert_eq!(d.by, DecidedBy::Global);
    assert!(!d.allowed());

    let open = self::acl(json!({
        "defaultAction": "allow",
        "policies": [{ "appId": "app1", "namespace": "default", "defaultAction": "deny" }]
    }));
    assert!(open.allows(&caller("app2"), Some("GET"), "/x"));
    assert!(!open.allows(&caller("app1"), Some("GET"), "/x"));
}

#[test]
fn the_policy_must_match_trust_domain_and_namespace_too() {
    let acl = example();
    assert!(acl.allows(&caller("app1"), Some("GET"), "/other"));
    for other in [
        Identity::new("corp", "default", "app1"),
        Identity::new("public", "prod", "app1"),
    ] {
        let d = acl.decide(&other, Some("GET"), "/other");
        assert_eq!(d.by, DecidedBy::Global, "{other}");
        assert!(!d.allowed(), "{other}");
    }
}

#[test]
fn policies_can_name_the_same_app_in_different_namespaces_and_domains() {
    let acl = acl(json!({
        "defaultAction": "deny",
        "policies": [
            { "appId": "app1", "namespace": "default", "defaultAction": "allow" },
            { "appId": "app1", "namespace": "prod", "defaultAction": "deny" },
            { "appId": "app1", "namespace": "default", "trustDomain": "corp", "defaultAction": "allow" }
        ]
    }));
    assert!(acl.allows(&caller("app1"), Some("GET"), "/a"));
    assert!(!acl.allows(&Identity::new("public", "prod", "app1"), Some("GET"), "/a"));
    assert!(acl.allows(&Identity::new("corp", "default", "app1"), Some("GET"), "/a"));
}

#[test]
fn operations_decide_then_the_policy_default() {
    let acl = example();
    let app1 = caller("app1");
    // /op1 denies POST and GET.
    let d = acl.decide(&app1, Some("GET"), "/op1");
    assert_eq!((d.action, d.by), (Action::Deny, DecidedBy::Operation));
    assert!(!acl.allows(&app1, Some("POST"), "op1"));
    // /op1 says nothing about PUT: the policy's allow.
    let d = acl.decide(&app1, Some("PUT"), "/op1");
    assert_eq!((d.action, d.by), (Action::Allow, DecidedBy::App));
    // /op2/* allows any verb.
    assert!(acl.allows(&app1, Some("DELETE"), "/op2/x"));
    // No operation: the policy's allow.
    let d = acl.decide(&app1, Some("GET"), "/op3");
    assert_eq!((d.action, d.by), (Action::Allow, DecidedBy::App));
}

#[test]
fn a_policy_without_a_default_falls_back_to_the_global_one() {
    let acl = acl(json!({
        "defaultAction": "deny",
        "policies": [{
            "appId": "app1", "namespace": "default",
            "operations": [{ "name": "/open", "httpVerb": ["*"] }]
        }]
    }));
    // `action` defaults to allow.
    assert!(acl.allows(&caller("app1"), Some("GET"), "/open"));
    let d = acl.decide(&caller("app1"), Some("GET"), "/closed");
    assert_eq!((d.action, d.by), (Action::Deny, DecidedBy::Global));
}

fn with_operations(operations: serde_json::Value) -> AccessControl {
    acl(json!({
        "defaultAction": "deny",
        "policies": [{
            "appId": "app1", "namespace": "default", "defaultAction": "deny",
            "operations": operations
        }]
    }))
}

#[test]
fn single_star_is_exactly_one_segment() {
    let acl = with_operations(json!([{ "name": "/op2/*", "httpVerb": ["*"] }]));
    let a = caller("app1");
    assert!(acl.allows(&a, Some("GET"), "/op2/x"));
    assert!(!acl.allows(&a, Some("GET"), "/op2"));
    assert!(!acl.allows(&a, Some("GET"), "/op2/x/y"));
    assert!(!acl.allows(&a, Some("GET"), "/op3/x"));
}

#[test]
fn double_star_is_any_depth() {
    let acl = with_operations(json!([
        { "name": "/op3/**", "httpVerb": ["*"] },
        { "name": "/a/**/z", "httpVerb": ["*"] }
    ]));
    let a = caller("app1");
    for path in ["/op3", "/op3/x", "/op3/x/y/z"] {
        assert!(acl.allows(&a, Some("GET"), path), "{path}");
    }
    assert!(!acl.allows(&a, Some("GET"), "/op4/x"));
    for path in ["/a/z", "/a/b/z", "/a/b/c/z"] {
        assert!(acl.allows(&a, Some("GET"), path), "{path}");
    }
    assert!(!acl.allows(&a, Some("GET"), "/a/b/c"));
}

#[test]
fn star_inside_a_segment_matches_characters() {
    let acl = with_operations(json!([{ "name": "/order*/v*x", "httpVerb": ["GET"] }]));
    let a = caller("app1");
    assert!(acl.allows(&a, Some("GET"), "/orders/v1x"));
    assert!(acl.allows(&a, Some("GET"), "/order/vx"));
    assert!(!acl.allows(&a, Some("GET"), "/orders/v1"));
    assert!(!acl.allows(&a, Some("GET"), "/orders/x/v1x"));
    assert!(!acl.allows(&a, Some("GET"), "/porders/v1x"));
}

#[test]
fn a_plain_name_matches_only_that_path() {
    let acl = with_operations(json!([{ "name": "op1", "httpVerb": ["*"] }]));
    let a = caller("app1");
    assert!(acl.allows(&a, Some("GET"), "/op1"));
    assert!(acl.allows(&a, Some("GET"), "op1"));
    assert!(!acl.allows(&a, Some("GET"), "/op1/sub"));
    assert!(!acl.allows(&a, Some("GET"), "/op10"));
}

#[test]
fn the_most_specific_operation_wins_whatever_the_order() {
    let acl = with_operations(json!([
        { "name": "/**", "httpVerb": ["*"], "action": "allow" },
        { "name": "/admin/*", "httpVerb": ["*"], "action": "deny" },
        { "name": "/admin/health", "httpVerb": ["*"], "action": "allow" },
        { "name": "/admin/**", "httpVerb": ["*"], "action": "allow" }
    ]));
    let a = caller("app1");
    assert!(acl.allows(&a, Some("GET"), "/public/x"));
    assert!(!acl.allows(&a, Some("GET"), "/admin/users"));
    assert!(acl.allows(&a, Some("GET"), "/admin/health"));
    // Only `/admin/**` and `/**` match two levels down; the more literal one answers.
    assert!(acl.allows(&a, Some("GET"), "/admin/users/1"));

    // A path that ends beats one continuing with `**`.
    let acl = with_operations(json!([
        { "name": "/a/**", "httpVerb": ["*"], "action": "allow" },
        { "name": "/a", "httpVerb": ["*"], "action": "deny" }
    ]));
    assert!(!acl.allows(&a, Some("GET"), "/a"));
    assert!(acl.allows(&a, Some("GET"), "/a/b"));

    // Left-most literal wins: /a/* over /*/b for /a/b.
    let acl = with_operations(json!([
        { "name": "/*/b", "httpVerb": ["*"], "action": "allow" },
        { "name": "/a/*", "httpVerb": ["*"], "action": "deny" }
    ]));
    assert!(!acl.allows(&a, Some("GET"), "/a/b"));
}

#[test]
fn equal_operations_prefer_a_listed_verb_then_the_first_written() {
    let acl = with_operations(json!([
        { "name": "/x", "httpVerb": ["*"], "action": "allow" },
        { "name": "/x", "httpVerb": ["delete"], "action": "deny" },
        { "name": "/y", "httpVerb": ["GET"], "action": "allow" },
        { "name": "/y", "httpVerb": ["GET"], "action": "deny" }
    ]));
    let a = caller("app1");
    assert!(acl.allows(&a, Some("GET"), "/x"));
    assert!(!acl.allows(&a, Some("DELETE"), "/x"));
    assert!(
        !acl.allows(&a, Some("delete"), "/x"),
        "verbs are case-insensitive"
    );
    assert!(acl.allows(&a, Some("GET"), "/y"));
}

#[test]
fn an_unlisted_verb_moves_on_to_the_next_matching_operation() {
    let acl = with_operations(json!([
        { "name": "/a/b", "httpVerb": ["GET"], "action": "allow" },
        { "name": "/a/*", "httpVerb": ["POST"], "action": "allow" }
    ]));
    let a = caller("app1");
    assert!(acl.allows(&a, Some("GET"), "/a/b"));
    assert!(acl.allows(&a, Some("POST"), "/a/b"));
    let d = acl.decide(&a, Some("PUT"), "/a/b");
    assert_eq!((d.action, d.by), (Action::Deny, DecidedBy::App));
}

#[test]
fn grpc_calls_ignore_verbs_and_match_case_sensitively() {
    let acl = with_operations(json!([
        { "name": "/Orders/Create", "httpVerb": ["POST"], "action": "allow" },
        { "name": "/Orders/Peek", "action": "allow" }
    ]));
    let a = caller("app1");
    assert!(acl.allows(&a, None, "/Orders/Create"));
    assert!(acl.allows(&a, None, "Orders/Peek"));
    assert!(
        !acl.allows(&a, None, "/orders/create"),
        "gRPC is case-sensitive"
    );
    // HTTP is case-insensitive, and an operation with no verbs covers gRPC only (Dapr).
    assert!(acl.allows(&a, Some("POST"), "/orders/create"));
    assert!(!acl.allows(&a, Some("GET"), "/Orders/Peek"));
}

#[test]
fn methods_are_normalised_before_matching() {
    let acl = with_operations(json!([
        { "name": "/public/**", "httpVerb": ["*"], "action": "allow" }
    ]));
    let a = caller("app1");
    assert!(acl.allows(&a, Some("GET"), "//public//x"));
    assert!(acl.allows(&a, Some("GET"), "/public/./x"));
    assert!(!acl.allows(&a, Some("GET"), "/public/../admin"));
    assert!(!acl.allows(&a, Some("GET"), "/../../admin"));
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            json!({ "defaultAction": "maybe" }),
            "accessControl.defaultAction",
        ),
        (
            json!({ "policies": [{ "namespace": "default" }] }),
            "accessControl.policies[0].appId",
        ),
        (
            json!({ "policies": [{ "appId": "a", "namespace": "d" }, { "appId": "b" }] }),
            "accessControl.policies[1].namespace",
        ),
        (
            json!({ "policies": [{ "appId": "a", "namespace": "d", "defaultAction": "nope" }] }),
            "accessControl.policies[0].defaultAction",
        ),
        (
            json!({ "policies": [{ "appId": "a", "namespace": "d",
                "operations": [{ "name": "/x", "httpVerb": ["GET", "FETCH"] }] }] }),
            "accessControl.policies[0].operations[0].httpVerb[1]",
        ),
        (
            json!({ "policies": [{ "appId": "a", "namespace": "d",
                "operations": [{ "name": "/x", "action": "permit" }] }] }),
            "accessControl.policies[0].operations[0].action",
        ),
        (
            json!({ "policies": [{ "appId": "a", "namespace": "d",
                "operations": [{ "name": "" }] }] }),
            "accessControl.policies[0].operations[0].name",
        ),
        (
            json!({ "policies": [{ "appId": "a", "namespace": "d",
                "operations": [{ "name": "/a**" }] }] }),
            "accessControl.policies[0].operations[0].name",
        ),
        (
            json!({ "policies": [{ "appId": "a", "namespace": "d", "operation": [] }] }),
            "accessControl.policies[0]",
        ),
        (
            json!({ "policies": [{ "appId": "a", "namespace": "d" },
                                 { "appId": "a", "namespace": "d" }] }),
            "accessControl.policies[1]",
        ),
        (json!({ "policies": "all" }), "accessControl.policies"),
    ];
    for (spec, field) in cases {
        let msg = spec_error(spec.clone());
        assert!(msg.starts_with(field), "{spec}: {msg}");
    }
}

#[test]
fn glob_edge_cases() {
    assert!(glob("*", ""));
    assert!(glob("a*", "a"));
    assert!(glob("*a", "ba"));
    assert!(!glob("*ab", "b"));
    assert!(glob("a*b*c", "aXbYc"));
    assert!(glob("a*b*c", "abbc"));
    assert!(!glob("a*b*c", "acb"));
    assert!(!glob("ab*ba", "aba"));
}
