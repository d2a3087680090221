# Reserved tags: the facts the promotion rules trust (who created a version, its stage history, its approvals) are
# stored in tags under `mlflow_gate.`, and the run's user in the run tag `mlflow.user`. Only the gate writes them,
# from the verified token, so nobody (admins included) may set or delete them through the API. The gate enforces
# this in Rust as well; the policy repeats it so the rule is visible, tested and independent of the binary.
package mlflow_gate

import rego.v1

reserved_prefix := "mlflow_gate."

run_user_tag := "mlflow.user"

# Keys compare case-insensitively: on case-insensitive database collations `MLFLOW_GATE.created_by` is the same
# tag. (The checks are written inline rather than as functions: a function call costs regorus ~15 µs.)

# Keys a request sets or deletes one at a time: registered model, model version, run, experiment and trace tags
# (`key`), and the path-addressed tags of logged models (`tag_key`).
single_tag_keys contains k if {
	mutating
	k := target.key
}

single_tag_keys contains k if {
	mutating
	k := target.tag_key
}

# Keys a request writes in a batch or at creation: `tags: [{key, value}]` (CreateRegisteredModel,
# CreateModelVersion, CreateRun, LogBatch, CreateExperiment, ...), or a `{key: value}` object.
body_tag_keys contains k if {
	mutating
	tags := request_body.tags
	not is_object(tags)
	t := tags[_]
	k := t.key
}

body_tag_keys contains k if {
	mutating
	tags := request_body.tags
	is_object(tags)
	some k, _ in tags
}

written_tag_keys := single_tag_keys | body_tag_keys

# Most writes name no tag at all (a stage transition, a metric): one look at the request skips every rule below.
violations contains v if {
	writes_tags
	some v in tag_violations
}

writes_tags if {
	mutating
	_ = target.key
}

writes_tags if {
	mutating
	_ = target.tag_key
}

writes_tags if {
	mutating
	_ = request_body.tags
}

tag_violations contains violation(
	"reserved_tags",
	sprintf("tags starting with %s are written only by the gate; %s may not set or delete %s", [reserved_prefix, rpc, k]),
) if {
	some k in written_tag_keys
	is_string(k)
	startswith(lower(k), reserved_prefix)
}

# The run user: set by the gate on CreateRun (it replaces whatever the client sent, so CreateRun is not refused);
# changing it afterwards would let anyone pass a run off as someone else's.
tag_violations contains violation(
	"reserved_tags",
	sprintf("the run tag %s is set by the gate from your token; %s may not change it", [run_user_tag, rpc]),
) if {
	rpc in {"SetTag", "DeleteTag"}
	k := target.key
	is_string(k)
	lower(k) == run_user_tag
}

tag_violations contains violation(
	"reserved_tags",
	sprintf("the run tag %s is set by the gate from your token; %s may not change it", [run_user_tag, rpc]),
) if {
	rpc == "LogBatch"
	some k in body_tag_keys
	is_string(k)
	lower(k) == run_user_tag
}

# Server-side schedules: in MLflow 3.18 the experiment tag `mlflow.issueDetection.schedule` (any
# `mlflow.issueDetection.*` key) makes the server run issue detection on its own, writing without passing through
# the gate. Like the other server-side job triggers, only admins may set or remove it.
tag_violations contains violation(
	"jobs.schedule_tag",
	sprintf("the experiment tag %s schedules server-side work that bypasses the gate; only admins may change it", [k]),
) if {
	some k in written_tag_keys
	is_string(k)
	startswith(lower(k), "mlflow.issuedetection.")
	not is_admin
}
