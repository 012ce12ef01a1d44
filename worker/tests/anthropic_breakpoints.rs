//! Prompt-cache breakpoints in the Anthropic request: placed where a writer's session repeats
//! itself, counted against Anthropic's limit of 4, skipped for short prefixes, the caller's kept.

use serde_json::{json, Value};
use storycad_protocol::ChatRequest;
use storycad_worker::providers::anthropic::to_messages_request;

const MODEL: &str = "claude-sonnet-4-5";
const EPHEMERAL: fn() -> Value = || json!({"type": "ephemeral"});

fn words(n: usize) -> String {
    "lighthouse ".repeat(n)
}

/// The request sent for `body` after placing breakpoints for a minimum of `min` tokens, and
/// how many the Worker placed.
fn placed(body: Value, min: u64) -> (Value, usize) {
    let req: ChatRequest = serde_json::from_value(body).expect("a valid OpenAI request");
    let mut out = to_messages_request(&req, MODEL, 1024).expect("translates");
    let n = out.place_breakpoints(min);
    let bytes = serde_json::to_vec(&out).expect("serializes");
    (serde_json::from_slice(&bytes).expect("valid JSON"), n)
}

fn session(system: &str, exchanges: &[(&str, &str)], newest: Value) -> Value {
    let mut messages = vec![json!({"role": "system", "content": system})];
    for (q, a) in exchanges {
        messages.push(json!({"role": "user", "content": q}));
        messages.push(json!({"role": "assistant", "content": a}));
    }
    messages.push(json!({"role": "user", "content": newest}));
    json!({"model": "storycad-smart", "messages": messages})
}

fn marks(sent: &Value) -> usize {
    let in_system = sent["system"].as_array().map_or(0, |b| {
        b.iter()
            .filter(|b| b.get("cache_control").is_some())
            .count()
    });
    let in_messages = sent["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .filter(|b| b.get("cache_control").is_some())
        .count();
    in_system + in_messages
}

#[test]
fn a_story_context_and_the_conversation_get_one_breakpoint_each() {
    let story = words(2200);
    let (sent, n) = placed(
        session(
            &story,
            &[("Draft chapter one.", "It was dark.")],
            json!("Go on."),
        ),
        1024,
    );
    assert_eq!(n, 2);
    assert_eq!(
        sent["system"],
        json!([{"type": "text", "text": story, "cache_control": EPHEMERAL()}])
    );
    assert_eq!(
        sent["messages"][1]["content"],
        json!([{"type": "text", "text": "It was dark.", "cache_control": EPHEMERAL()}])
    );
    assert!(sent["messages"][0]["content"][0]
        .get("cache_control")
        .is_none());
    assert!(sent["messages"][2]["content"][0]
        .get("cache_control")
        .is_none());
    assert_eq!(marks(&sent), 2);
}

#[test]
fn short_prefixes_get_none_and_the_system_prompt_stays_a_string() {
    let body = session("You are terse.", &[("Hi.", "Hello.")], json!("?"));
    let (sent, n) = placed(body.clone(), 1024);
    assert_eq!((n, marks(&sent)), (0, 0));
    assert_eq!(sent["system"], "You are terse.");
    // The model's minimum decides: at 1 token both are placed.
    assert_eq!(placed(body, 1).1, 2);
}

#[test]
fn the_conversation_counts_towards_its_own_breakpoint() {
    let long = words(1000);
    let (sent, n) = placed(session("Be kind.", &[(&long, &long)], json!("Next?")), 1024);
    assert_eq!(n, 1);
    assert_eq!(sent["system"], "Be kind.");
    assert_eq!(
        sent["messages"][1]["content"][0]["cache_control"],
        EPHEMERAL()
    );
}

#[test]
fn no_conversation_breakpoint_without_a_newest_user_turn_after_it() {
    let long = words(3000);
    let one = json!({"model": "m", "messages": [{"role": "user", "content": long}]});
    assert_eq!(placed(one, 1024).1, 0);
    let prefill = json!({"model": "m", "messages": [
        {"role": "user", "content": long},
        {"role": "assistant", "content": "Once upon"}]});
    assert_eq!(placed(prefill, 1024).1, 0);
}

#[test]
fn the_callers_breakpoints_are_kept_counted_and_sent_as_five_minute_ones() {
    let long = words(3000);
    let part = |text: &str| json!({"type": "text", "text": text, "cache_control": {"type": "ephemeral", "ttl": "1h"}});
    // One on the system prompt and three in the messages: no room for the Worker's.
    let body = json!({"model": "m", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Rules."}, part(&long)]},
        {"role": "user", "content": [part("a"), part("b"), part("c")]},
        {"role": "assistant", "content": long},
        {"role": "user", "content": "?"}]});
    let (sent, n) = placed(body, 1024);
    assert_eq!(n, 0);
    assert_eq!(marks(&sent), 4);
    assert_eq!(sent["system"][0]["text"], format!("Rules.\n\n{long}"));
    assert_eq!(
        sent["system"][0]["cache_control"],
        EPHEMERAL(),
        "no one-hour ttl"
    );
    assert_eq!(
        sent["messages"][0]["content"][2]["cache_control"],
        EPHEMERAL()
    );
    assert!(sent["messages"][1]["content"][0]
        .get("cache_control")
        .is_none());

    // The caller marked the block the Worker would: one mark, once (no duplicate key).
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": long},
        {"role": "assistant", "content": [part("Once")]},
        {"role": "user", "content": "?"}]});
    let req: ChatRequest = serde_json::from_value(body).expect("valid");
    let mut out = to_messages_request(&req, MODEL, 1024).expect("translates");
    assert_eq!(out.place_breakpoints(1024), 0);
    let text = String::from_utf8(serde_json::to_vec(&out).expect("serializes")).expect("utf-8");
    assert_eq!(text.matches("cache_control").count(), 1, "{text}");
}

#[test]
fn tools_count_in_the_prefix() {
    let body = json!({"model": "m",
        "tools": [{"type": "function", "function": {"name": "outline", "description": words(1100),
            "parameters": {"type": "object"}}}],
        "messages": [{"role": "system", "content": "Short."}, {"role": "user", "content": "?"}]});
    let (sent, n) = placed(body, 1024);
    assert_eq!(n, 1);
    assert_eq!(sent["system"][0]["cache_control"], EPHEMERAL());
}

#[test]
fn a_tool_call_before_the_tool_results_takes_the_breakpoint() {
    // The newest user turn is the tool's answer; the block before it is the call.
    let long = words(2000);
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": long},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "lookup", "arguments": "{\"q\":\"tide\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "high at six"}]});
    let (sent, n) = placed(body, 1024);
    assert_eq!(n, 1);
    assert_eq!(
        sent["messages"][1]["content"][0],
        json!({"type": "tool_use", "id": "call_1", "name": "lookup", "input": {"q": "tide"},
               "cache_control": EPHEMERAL()})
    );
}
