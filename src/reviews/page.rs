//! The review pages' HTML: server-rendered, one small inline script, no third-party assets. Every value that comes
//! from MLflow or the workflow (model names, tags, comments, user ids) goes through [`esc`] (text and attributes)
//! or [`url_component`]; the script reads its data from escaped `data-` attributes and writes with `textContent`.

use serde_json::Value;

use super::{OpenRequest, REVIEWS_PATH, VERSION_PATH};
use crate::auth::Principal;

/// HTML-escapes text for element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn url_component(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A JSON value as text (strings without quotes).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

const STYLE: &str =
    "body{font-family:sans-serif;margin:2em;max-width:70em}.card{border:1px solid #ccc;border-radius:6px;\
padding:1em;margin:1em 0}.pass{color:#176f2c;font-weight:bold}.fail{color:#b00020;font-weight:bold}\
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:left}.result{font-weight:bold}\
header{display:flex;gap:1em;align-items:baseline}textarea{width:100%}";

const SCRIPT: &str = r#"
document.querySelectorAll('button[data-action]').forEach(function (b) {
  b.addEventListener('click', function () {
    var card = b.closest('.card'), d = card.dataset, action = b.dataset.action;
    var comment = card.querySelector('textarea').value;
    var body = {name: d.name, version: d.version, comment: comment};
    var url = 'ajax-api/2.0/mlflow/comments/create';
    if (action !== 'comment') {
      url = 'ajax-api/2.0/mlflow/transition-requests/' + action;
      body.stage = d.stage;
      if (action === 'approve') { body.archive_existing_versions = true; }
    }
    var out = card.querySelector('.result');
    out.textContent = '...';
    fetch('/' + url, {method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)})
      .then(function (r) { return r.json().then(function (j) { return [r.ok, j]; }); })
      .then(function (res) {
        out.textContent = res[0] ? 'Done: ' + action : (res[1].error_code + ': ' + res[1].message);
        out.className = 'result ' + (res[0] ? 'pass' : 'fail');
        if (res[0]) { setTimeout(function () { location.reload(); }, 800); }
      })
      .catch(function (e) { out.textContent = 'Failed: ' + e; out.className = 'result fail'; });
  });
});
"#;

fn shell(title: &str, principal: &Principal, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>{STYLE}</style></head><body>\
<header><h1>{title}</h1><span id=\"who\">Signed in as <b>{sub}</b> ({via})</span><a href=\"/gate/logout\">Sign out</a>\
<a href=\"/\">MLflow</a><a href=\"{REVIEWS_PATH}\">All reviews</a></header>{body}<script>{SCRIPT}</script></body></html>",
        title = esc(title),
        sub = esc(&principal.sub),
        via = principal.via.as_str(),
    )
}

/// The list of open requests.
pub fn reviews(principal: &Principal, open: &[OpenRequest], gates: &Value) -> String {
    let mut body = String::new();
    if open.is_empty() {
        body.push_str("<p id=\"empty\">No transition request is waiting for review.</p>");
    }
    for r in open {
        body.push_str(&card(r, gates));
    }
    shell("Reviews", principal, &body)
}

fn card(r: &OpenRequest, gates: &Value) -> String {
    let (name, version) = (esc(&r.name), esc(&r.version));
    let stage = r.request.get("to_stage").map(text).unwrap_or_default();
    let link = format!("{VERSION_PATH}?name={}&amp;version={}", url_component(&r.name), url_component(&r.version));
    let mv = r.resource.get("model_version").cloned().unwrap_or_default();
    let run = r.resource.get("source_run").cloned().unwrap_or_default();
    let mut h = format!(
        "<section class=\"card\" data-name=\"{name}\" data-version=\"{version}\" data-stage=\"{}\">\
<h2><a href=\"{link}\">{name} version {version}</a></h2><table>",
        esc(&stage)
    );
    for (k, v) in r.request.as_object().into_iter().flatten() {
        let shown = !matches!(
            k.as_str(),
            "id" | "activity_type" | "user_id" | "creation_timestamp" | "last_updated_timestamp" | "system_comment"
        );
        if shown && !v.is_null() {
            h.push_str(&format!("<tr><th>requested {}</th><td>{}</td></tr>", esc(k), esc(&text(v))));
        }
    }
    let requester = r.request.get("user_id").map(text).unwrap_or_default();
    h.push_str(&format!("<tr><th>requester</th><td class=\"requester\">{}</td></tr>", esc(&requester)));
    let creator = mv.get("created_by").map(text).unwrap_or_else(|| "-".into());
    h.push_str(&format!("<tr><th>stamped creator</th><td>{}</td></tr>", esc(&creator)));
    h.push_str(&format!(
        "<tr><th>current stage</th><td>{}</td></tr>",
        esc(&mv.get("current_stage").map(text).unwrap_or_default())
    ));
    h.push_str(&source_run_row(&run));
    let tags = mv.get("tags").and_then(Value::as_object).into_iter().flatten();
    let tags: Vec<String> = tags
        .filter(|(k, _)| !k.starts_with(crate::mlflow::stamps::RESERVED_PREFIX))
        .map(|(k, v)| format!("{}={}", esc(k), esc(&text(v))))
        .collect();
    h.push_str(&format!("<tr><th>version tags</th><td class=\"tags\">{}</td></tr>", tags.join(", ")));
    h.push_str("</table>");
    h.push_str(&evaluation(&r.name, &run, gates));
    h.push_str(&activity_list(&r.activities));
    h.push_str(&match &r.verdict {
        Ok(()) => "<p class=\"verdict pass\">The policy would let you approve this request.</p>".to_string(),
        Err(why) => format!("<p class=\"verdict fail\">You cannot approve: {}</p>", esc(why)),
    });
    h.push_str(
        "<textarea rows=\"2\" placeholder=\"Comment (optional for approve and reject)\"></textarea>\
<button data-action=\"approve\">Approve</button> <button data-action=\"reject\">Reject</button> \
<button data-action=\"comment\">Comment (request changes)</button> <span class=\"result\"></span></section>",
    );
    h
}

fn source_run_row(run: &Value) -> String {
    let (Some(run_id), Some(exp)) = (run.get("run_id").and_then(Value::as_str), run.get("experiment_id")) else {
        return "<tr><th>source run</th><td>-</td></tr>".into();
    };
    let href = format!("/#/experiments/{}/runs/{}", url_component(&text(exp)), url_component(run_id));
    format!("<tr><th>source run</th><td><a class=\"run\" href=\"{}\">{}</a></td></tr>", esc(&href), esc(run_id))
}

/// The model's evaluation gate (`data.gates`): each metric against its bounds, each required tag present or not.
fn evaluation(name: &str, run: &Value, gates: &Value) -> String {
    let model = gates.pointer(&format!("/models/{}", name.replace('~', "~0").replace('/', "~1")));
    let pick = |key: &str| model.and_then(|m| m.get(key)).or_else(|| gates.pointer(&format!("/default/{key}")));
    let mut h = String::from(
        "<h3>Evaluation gate</h3><table class=\"gate\"><tr><th>check</th><th>value</th><th>result</th></tr>",
    );
    for (metric, bounds) in pick("metrics").and_then(Value::as_object).into_iter().flatten() {
        let value = run.pointer(&format!("/metrics/{metric}")).and_then(Value::as_f64);
        let min = bounds.get("min").and_then(Value::as_f64);
        let max = bounds.get("max").and_then(Value::as_f64);
        let ok = value.is_some_and(|v| min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m));
        let bound = [min.map(|m| format!("&ge; {m}")), max.map(|m| format!("&le; {m}"))].into_iter().flatten();
        h.push_str(&format!(
            "<tr><td>{} {}</td><td>{}</td><td class=\"{c}\">{c}</td></tr>",
            esc(metric),
            bound.collect::<Vec<_>>().join(" "),
            value.map_or("missing".into(), |v| v.to_string()),
            c = if ok { "pass" } else { "fail" }
        ));
    }
    for tag in pick("required_tags").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        let value = run.pointer(&format!("/tags/{}", tag.replace('~', "~0").replace('/', "~1")));
        h.push_str(&format!(
            "<tr><td>tag {}</td><td>{}</td><td class=\"{c}\">{c}</td></tr>",
            esc(tag),
            esc(&value.map(text).unwrap_or_else(|| "missing".into())),
            c = if value.is_some() { "pass" } else { "fail" }
        ));
    }
    h.push_str("</table>");
    h
}

fn activity_list(activities: &[Value]) -> String {
    let mut h = String::from("<h3>Approvals and comments</h3><ul class=\"activity\">");
    for a in activities {
        let field = |k: &str| esc(&a.get(k).map(text).unwrap_or_default());
        let comment = a.get("comment").filter(|c| !c.is_null()).map(|c| format!(": <q>{}</q>", esc(&text(c))));
        h.push_str(&format!(
            "<li>{} by {} (to {}){}</li>",
            field("activity_type"),
            field("user_id"),
            field("to_stage"),
            comment.unwrap_or_default()
        ));
    }
    h.push_str("</ul>");
    h
}

/// A version's page: its stage and alias history (the gate's stamps) and its workflow state.
pub fn version(principal: &Principal, name: &str, version: &str, resource: &Value) -> String {
    let mv = resource.get("model_version").cloned().unwrap_or_default();
    let mut body = format!(
        "<p>Model <b>{}</b> version <b>{}</b>, now in <b>{}</b>, created by <b>{}</b></p><h3>Stage and alias history</h3>",
        esc(name),
        esc(version),
        esc(&mv.get("current_stage").map(text).unwrap_or_default()),
        esc(&mv.get("created_by").map(text).unwrap_or_else(|| "-".into()))
    );
    body.push_str("<table class=\"history\">");
    for entry in mv.get("stage_history").and_then(Value::as_array).into_iter().flatten() {
        let cells: Vec<String> = entry
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("<td>{}: {}</td>", esc(k), esc(&text(v))))
            .collect();
        body.push_str(&format!("<tr>{}</tr>", cells.concat()));
    }
    body.push_str("</table><h3>Approvals</h3><ul>");
    for a in resource.get("approvals").and_then(Value::as_array).into_iter().flatten() {
        let f = |k: &str| esc(&a.get(k).map(text).unwrap_or_default());
        body.push_str(&format!("<li>{} approved {} (still valid: {})</li>", f("approver"), f("stage"), f("valid")));
    }
    body.push_str("</ul>");
    shell(&format!("{name} version {version}"), principal, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(esc("<script>alert('x')</script>&\""), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;");
    }
}
