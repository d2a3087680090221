# Artifacts: who may write or delete artifact files (the proxied store's PUT, DELETE and multipart upload,
# presigned upload URLs, the UI's upload-artifact).
#
# The files of a registered model version are what Production serves, and approvals judge a version by its run and
# source, so the files must not change behind the registry's back. The gate resolves every artifact write to the
# storage location it touches and hands the policy `input.resource.artifact` (README.md, "Artifact facts"): what
# the location belongs to (a run, a logged model or a trace, verified against MLflow), that entity's owner (the
# gate's stamps), and the registered versions whose files lie at, under or above the location.
#
# Rules: only the owner of the run, logged model or trace (or an admin) writes into it; a location nobody can be
# shown to own is admin-only; registered files are frozen (admins only, and the decision carries
# `"frozen_override": true` so the audit shows it); a path the gate cannot read exactly as MLflow will is refused.
package mlflow_gate

import rego.v1

# One look at the request skips every rule below for anything but an artifact write.
violations contains v if {
	resource_type == "artifact"
	mutating
	some v in artifact_violations
}

artifact := a if {
	a := input.resource.artifact
	is_object(a)
} else := {}

artifact_location := l if {
	l := artifact.location
	is_string(l)
} else := "(an unknown location)"

artifact_kind := k if {
	k := artifact.kind
	k in {"run", "logged_model", "trace"}
} else := "unknown"

artifact_owner := o if {
	o := artifact.owner
	is_string(o)
	o != ""
}

artifact_owned if artifact.owned == true

artifact_kind_label := "run" if artifact_kind == "run"

else := "logged model" if artifact_kind == "logged_model"

else := "trace" if artifact_kind == "trace"

else := "an unknown entity"

artifact_entity := sprintf("%s %s", [artifact_kind_label, id]) if {
	id := artifact.id
	is_string(id)
} else := sprintf("a %s", [artifact_kind_label])

# Anything but a list of versions is treated as frozen: a malformed fact never opens a write.
registered_files := r if {
	r := artifact.registered_versions
	is_array(r)
} else := [{"name": "(unknown)", "version": "?"}]

artifact_frozen if count(registered_files) > 0

artifact_frozen if artifact.frozen == true

frozen_versions := concat(", ", sort({sprintf("%v version %v", [at(v, "name"), at(v, "version")]) | some v in registered_files}))

artifact_violations contains violation("artifacts.bad_path", sprintf("%s; send the plain path MLflow clients send", [p])) if {
	p := artifact.path_problem
	is_string(p)
}

artifact_violations contains violation(
	"artifacts.unowned",
	sprintf("%s belongs to no run, logged model or trace that the gate could verify in MLflow; only admins may write or delete there", [artifact_location]),
) if {
	not artifact_owned
	artifact_kind == "unknown"
	not is_admin
}

# A directory above an entity's artifact directory (e.g. `<exp>/<run>`): it holds more than that entity's files.
artifact_violations contains violation(
	"artifacts.unowned",
	sprintf("%s contains the artifact directory of %s but is not inside it; only admins may write or delete there", [artifact_location, artifact_entity]),
) if {
	not artifact_owned
	artifact_kind != "unknown"
	not is_admin
}

artifact_violations contains violation(
	"artifacts.owner_only",
	sprintf("%s belongs to %s, owned by %s; only its owner or an admin may write or delete its artifacts", [artifact_location, artifact_entity, artifact_owner]),
) if {
	artifact_owned
	artifact_owner != principal_sub
	not is_admin
}

artifact_violations contains violation(
	"artifacts.owner_only",
	sprintf("%s belongs to %s, which has no recorded owner (created before the gate stamped owners); only admins may write or delete its artifacts", [artifact_location, artifact_entity]),
) if {
	artifact_owned
	not artifact_owner
	not is_admin
}

artifact_violations contains violation(
	"artifacts.frozen",
	sprintf("%s holds files of registered model %s; registered files are frozen (register a new version instead, or ask an admin)", [artifact_location, frozen_versions]),
) if {
	artifact_frozen
	not is_admin
}

# The flag the gate records (log line and audit record) when an admin changes registered files.
frozen_override if {
	resource_type == "artifact"
	mutating
	artifact_frozen
	is_admin
	allow
}
