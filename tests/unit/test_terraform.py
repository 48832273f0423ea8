"""The Terraform configuration and cloudbuild.yaml, checked offline.

No Google provider can be downloaded here, so `terraform validate` cannot run. Instead:
the HCL is parsed (python-hcl2) and its references are resolved against its own
declarations; the provider-less modules that derive the topology and the DDL statements are
evaluated with the real `terraform console` and compared with callpipe.topology and
callpipe.spanner_db; `terraform fmt -check` and the Cloud Build schema run as in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import hcl2
import pytest
import yaml

from callpipe.spanner_db import read_ddl_statements
from callpipe.topology import REPO_ROOT, Topology, load_topology

TERRAFORM_DIR = REPO_ROOT / "terraform"
TOPOLOGY_MODULE = TERRAFORM_DIR / "modules" / "topology"
DDL_MODULE = TERRAFORM_DIR / "modules" / "spanner_ddl"
CLOUDBUILD = REPO_ROOT / "cloudbuild.yaml"
PIPELINE = REPO_ROOT / "schemas" / "pipeline.yaml"
SCHEMA_SQL = REPO_ROOT / "schemas" / "spanner" / "schema.sql"

needs_terraform = pytest.mark.skipif(
    shutil.which("terraform") is None, reason="terraform is not on PATH"
)


def _parse_dir(directory: Path) -> dict[str, list[Any]]:
    """Every top-level block of the *.tf files of one module, by block type."""
    blocks: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open(encoding="utf-8") as handle:
            for kind, items in hcl2.load(handle).items():
                blocks.setdefault(kind, []).extend(items)
    return blocks


def _named(blocks: dict[str, list[Any]], kind: str) -> dict[str, Any]:
    """Blocks with one label (variable, output, module): name -> body."""
    return {name: body for item in blocks.get(kind, []) for name, body in item.items()}


def _typed(blocks: dict[str, list[Any]], kind: str) -> dict[tuple[str, str], Any]:
    """Blocks with two labels (resource, data): (type, name) -> body."""
    return {
        (rtype, name): body
        for item in blocks.get(kind, [])
        for rtype, bodies in item.items()
        for name, body in bodies.items()
    }


def _locals(blocks: dict[str, list[Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for item in blocks.get("locals", []):
        merged.update(item)
    return merged


def _source_without_comments(directory: Path) -> str:
    lines = []
    for path in sorted(directory.glob("*.tf")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.lstrip().startswith("#"):
                lines.append(line)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def root() -> dict[str, list[Any]]:
    return _parse_dir(TERRAFORM_DIR)


@pytest.fixture(scope="module")
def resources(root: dict[str, list[Any]]) -> dict[tuple[str, str], Any]:
    return _typed(root, "resource")


@pytest.fixture(scope="module")
def topology() -> Topology:
    return load_topology()


# --- The configuration reads the topology and declares what it implies -------------------


def test_root_reads_the_topology_file_with_yamldecode(root: dict[str, list[Any]]) -> None:
    module = _named(root, "module")["topology"]
    assert module["source"] == "./modules/topology"
    assert module["topology"] == '${yamldecode(file("${path.module}/../schemas/pipeline.yaml"))}'
    ddl = _named(root, "module")["spanner_ddl"]
    assert ddl["schema_sql"] == '${file("${path.module}/../schemas/spanner/schema.sql")}'


def test_topics_and_subscriptions_come_from_the_topology_module(
    resources: dict[tuple[str, str], Any],
) -> None:
    assert resources[("google_pubsub_topic", "topic")]["for_each"] == "${module.topology.topics}"
    step = resources[("google_pubsub_subscription", "step")]
    hold = resources[("google_pubsub_subscription", "hold")]
    assert step["for_each"] == "${module.topology.step_subscriptions}"
    assert hold["for_each"] == "${module.topology.hold_subscriptions}"
    for subscription in (step, hold):
        assert subscription["name"] == "${each.key}"
        assert subscription["expiration_policy"] == [{"ttl": ""}]
    assert "retry_policy" not in hold
    assert "dead_letter_policy" not in hold


def test_step_subscription_has_retry_dead_letter_and_authenticated_push(
    resources: dict[tuple[str, str], Any],
) -> None:
    step = resources[("google_pubsub_subscription", "step")]
    assert step["retry_policy"] == [
        {
            "minimum_backoff": "${each.value.retry.minimum_backoff_seconds}s",
            "maximum_backoff": "${each.value.retry.maximum_backoff_seconds}s",
        }
    ]
    (dead_letter,) = step["dead_letter_policy"]
    assert dead_letter["dead_letter_topic"] == (
        "${google_pubsub_topic.topic[each.value.dead_letter_topic].id}"
    )
    assert dead_letter["max_delivery_attempts"] == "${each.value.max_delivery_attempts}"
    (push,) = step["push_config"]
    # The topic path in the URL is what functions-framework turns into the CloudEvent source.
    assert push["push_endpoint"].endswith("/projects/${var.project_id}/topics/${each.value.topic}")
    assert push["push_endpoint"].startswith(
        "${google_cloudfunctions2_function.step[each.value.step].service_config[0].uri}"
    )
    (oidc,) = push["oidc_token"]
    assert oidc["service_account_email"] == "${google_service_account.push_invoker.email}"


def test_pubsub_service_agent_can_dead_letter(resources: dict[tuple[str, str], Any]) -> None:
    publisher = resources[("google_pubsub_topic_iam_member", "dead_letter_publisher")]
    subscriber = resources[("google_pubsub_subscription_iam_member", "dead_letter_subscriber")]
    assert publisher["role"] == "roles/pubsub.publisher"
    assert "topic.dead_letter_of != null" in publisher["for_each"]
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert subscriber["for_each"] == "${module.topology.step_subscriptions}"
    for grant in (publisher, subscriber):
        assert grant["member"] == "${local.pubsub_service_agent}"


def test_functions_are_gen2_without_eventarc_and_content_hashed(
    resources: dict[tuple[str, str], Any],
) -> None:
    function = resources[("google_cloudfunctions2_function", "step")]
    assert function["for_each"] == "${module.topology.steps}"
    # Pub/Sub steps are reached through our own push subscription, never an Eventarc trigger.
    assert "event_trigger" not in function
    (build,) = function["build_config"]
    (source,) = build["source"]
    (storage,) = source["storage_source"]
    assert storage["object"] == "${google_storage_bucket_object.step_source[each.key].name}"
    obj = resources[("google_storage_bucket_object", "step_source")]
    assert "${data.archive_file.step[each.key].output_md5}" in obj["name"]
    (service,) = function["service_config"]
    assert service["service_account_email"] == "${google_service_account.step[each.key].email}"
    assert service["environment_variables"] == "${local.function_environment[each.key]}"


def test_each_schedule_is_a_cloud_scheduler_job_publishing_to_its_topic(
    resources: dict[tuple[str, str], Any], root: dict[str, list[Any]]
) -> None:
    job = resources[("google_cloud_scheduler_job", "schedule")]
    assert job["for_each"] == "${module.topology.schedules}"
    assert job["schedule"] == "${each.value.cron}"
    assert job["time_zone"] == "${each.value.time_zone}"
    target = job["pubsub_target"][0]
    assert target["topic_name"] == "${google_pubsub_topic.topic[each.value.topic].id}"
    assert target["data"] == "${base64encode(jsonencode(each.value.message))}"
    assert target["attributes"] == {"schedule": "${each.key}"}  # as the local scheduler
    grant = resources[("google_pubsub_topic_iam_member", "scheduler_publisher")]
    assert grant["role"] == "roles/pubsub.publisher"
    assert "gcp-sa-cloudscheduler" in _locals(root)["scheduler_service_agent"]


def test_alerts_watch_every_dead_letter_hold_and_step_subscription(
    resources: dict[tuple[str, str], Any], root: dict[str, list[Any]]
) -> None:
    watched = _locals(root)
    assert "module.topology.dead_letter_holds" in watched["dead_letter_hold_ids"]
    assert "module.topology.step_subscriptions" in watched["step_subscription_ids"]
    signals = watched["pubsub_signals"]
    assert signals["dead_letters"]["metric"] == "num_undelivered_messages"
    assert signals["dead_letters"]["watched"] == "${local.dead_letter_hold_ids}"
    assert signals["dead_letters"]["threshold"] == 0
    assert signals["backlog"]["metric"] == "oldest_unacked_message_age"
    assert signals["backlog"]["watched"] == "${local.step_subscription_ids}"
    pubsub = resources[("google_monitoring_alert_policy", "pubsub")]
    condition = pubsub["conditions"][0]["condition_threshold"][0]
    assert "subscription/${each.value.metric}" in condition["filter"]
    assert "one_of(${each.value.watched})" in condition["filter"]
    assert condition["comparison"] == "COMPARISON_GT"
    assert condition["threshold_value"] == "${each.value.threshold}"
    # every log signal is a metric; those someone must act on are log-match alerts
    metrics = resources[("google_logging_metric", "log_counter")]
    assert metrics["for_each"] == "${local.log_signals}"
    log_match = resources[("google_monitoring_alert_policy", "log_match")]
    condition = log_match["conditions"][0]["condition_matched_log"][0]
    assert condition["filter"] == "${local.log_signals[each.key].filter}"
    strategy = log_match["alert_strategy"][0]
    assert strategy["notification_rate_limit"][0]["period"] and strategy["auto_close"]
    for name in ("pubsub", "log_match"):
        policy = resources[("google_monitoring_alert_policy", name)]
        assert policy["notification_channels"] == "${local.alert_channels}"
        assert policy["documentation"][0]["content"]  # what to do, in the notification


def test_only_http_steps_are_public(resources: dict[tuple[str, str], Any]) -> None:
    public = resources[("google_cloud_run_service_iam_member", "public")]
    assert public == {
        **public,
        "for_each": "${module.topology.http_steps}",
        "role": "roles/run.invoker",
        "member": "allUsers",
    }
    push = resources[("google_cloud_run_service_iam_member", "push_invoker")]
    assert push["for_each"] == "${module.topology.pubsub_steps}"
    assert push["member"] == "${google_service_account.push_invoker.member}"
    grants = [
        body
        for (rtype, _), body in resources.items()
        if rtype.endswith("_iam_member") and body.get("member") == "allUsers"
    ]
    assert grants == [public]


def test_every_step_declares_its_access(root: dict[str, list[Any]], topology: Topology) -> None:
    access = _locals(root)["step_access"]
    buckets = _locals(root)["buckets"]
    assert set(access) == set(topology.steps), (
        "terraform/main.tf local.step_access must list exactly the steps of pipeline.yaml"
    )
    for step, needs in access.items():
        assert set(needs) == {"spanner_role", "buckets", "secret_prefixes", "project_roles"}, step
        assert set(needs["buckets"]) <= set(buckets), step
        assert needs["spanner_role"] in (
            None,
            "roles/spanner.databaseReader",
            "roles/spanner.databaseUser",
        ), step


def test_functions_get_the_settings_env_vars(root: dict[str, list[Any]]) -> None:
    from callpipe.config import Settings

    environment = _locals(root)["common_environment"]
    aliases = {field.alias for field in Settings.model_fields.values()}
    settings_vars = set(environment) - {"THREADS"}
    assert settings_vars <= aliases
    assert {
        "ENVIRONMENT",
        "GOOGLE_CLOUD_PROJECT",
        "SPANNER_INSTANCE",
        "SPANNER_DATABASE",
        "AUDIO_STORAGE_BUCKET",
        "WEBHOOK_ARCHIVE_BUCKET",
        "RETENTION_DAYS",
    } <= settings_vars
    assert environment["ENVIRONMENT"] == "production"


def test_pubsub_steps_know_their_subscriptions_delivery_limit(root: dict[str, list[Any]]) -> None:
    """A step records its last attempt's failure; it learns which one is last from the env."""
    environment = str(_locals(root)["function_environment"])
    assert "'MAX_DELIVERY_ATTEMPTS': '${tostring(step.max_delivery_attempts)}'" in environment
    assert 'step.trigger_type == "pubsub"' in environment


def test_the_local_stack_gives_the_same_limit_to_pubsub_steps_only(topology: Topology) -> None:
    from callpipe.devstack.stack import LocalStack, config_from_env

    stack = LocalStack(config_from_env({}), topology)
    for sub in topology.subscriptions():
        if sub.step is not None:
            expected = {"MAX_DELIVERY_ATTEMPTS": str(sub.max_delivery_attempts)}
            assert stack._dead_letter_env(sub.step) == expected
    assert stack._dead_letter_env("intake") == {}


# Set by Cloud Run itself; a function that sets them does not deploy or misbehaves.
_RESERVED_ENV = {
    "PORT",
    "K_SERVICE",
    "K_REVISION",
    "K_CONFIGURATION",
    "FUNCTION_TARGET",
    "FUNCTION_SIGNATURE_TYPE",
}


def test_no_function_env_var_is_reserved_by_cloud_run(
    root: dict[str, list[Any]], topology: Topology
) -> None:
    keys = set(_locals(root)["common_environment"])
    for step in topology.steps.values():
        keys |= set(step.env)
    assert not keys & _RESERVED_ENV
    assert not [key for key in keys if key.startswith("X_GOOGLE_")]


def test_buckets_are_private_with_lifecycle(
    root: dict[str, list[Any]], resources: dict[tuple[str, str], Any]
) -> None:
    bucket = resources[("google_storage_bucket", "data")]
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["force_destroy"] is False
    variables = _named(root, "variable")
    assert variables["retention_days"]["default"] == 2555
    assert variables["coldline_after_days"]["default"] == 90
    assert variables["archive_after_days"]["default"] == 365
    classes = [
        rule["content"][0]["action"][0]["storage_class"]
        for dynamic in bucket["dynamic"]
        for rule in dynamic.values()
    ]
    assert classes == ["COLDLINE", "ARCHIVE"]
    (delete,) = bucket["lifecycle_rule"]
    assert delete["action"] == [{"type": "Delete"}]
    assert delete["condition"] == [{"age": "${var.retention_days}"}]


def test_variables_and_outputs_are_described(root: dict[str, list[Any]]) -> None:
    for kind in ("variable", "output"):
        for name, body in _named(root, kind).items():
            assert body.get("description"), f"{kind} {name} has no description"
    assert "intake_url" in _named(root, "output")


# --- A poor man's `terraform validate`: every reference resolves ---------------------------

_REFERENCE = re.compile(r"(?<![\w.])(var|local|module|data)\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?")
_RESOURCE_REF = re.compile(r"(?<![\w.])((?:google|archive)_[a-z0-9_]+)\.([A-Za-z_]\w*)")
_LOCAL_DEF = re.compile(r"^\s{2}([A-Za-z_]\w*)\s*=", re.MULTILINE)


def _local_names(directory: Path) -> set[str]:
    names: set[str] = set()
    for path in directory.glob("*.tf"):
        text = path.read_text(encoding="utf-8")
        for block in re.findall(r"^locals \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL):
            names.update(_LOCAL_DEF.findall(block))
    return names


@pytest.mark.parametrize("directory", [TERRAFORM_DIR, TOPOLOGY_MODULE, DDL_MODULE])
def test_every_reference_is_declared(directory: Path) -> None:
    blocks = _parse_dir(directory)
    text = _source_without_comments(directory)
    variables = set(_named(blocks, "variable"))
    local_names = _local_names(directory)
    assert local_names >= set(_locals(blocks))
    modules = _named(blocks, "module")
    declared_resources = set(_typed(blocks, "resource"))
    declared_data = set(_typed(blocks, "data"))
    problems: list[str] = []
    for kind, name, attribute in _REFERENCE.findall(text):
        if kind == "var" and name not in variables:
            problems.append(f"var.{name}")
        elif kind == "local" and name not in local_names:
            problems.append(f"local.{name}")
        elif kind == "module":
            if name not in modules:
                problems.append(f"module.{name}")
                continue
            outputs = _named(_parse_dir(directory / modules[name]["source"]), "output")
            if attribute and attribute not in outputs:
                problems.append(f"module.{name}.{attribute}")
        elif kind == "data" and (name, attribute) not in declared_data:
            problems.append(f"data.{name}.{attribute}")
    for rtype, name in _RESOURCE_REF.findall(text):
        if (rtype, name) not in declared_resources and (rtype, name) not in declared_data:
            problems.append(f"{rtype}.{name}")
    assert problems == []


def test_module_inputs_match_module_variables(root: dict[str, list[Any]]) -> None:
    for name, call in _named(root, "module").items():
        variables = _named(_parse_dir(TERRAFORM_DIR / call["source"]), "variable")
        assert set(call) - {"source"} == set(variables), name


# --- The derivations, evaluated by terraform itself ---------------------------------------


def _terraform_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CLI_CONFIG_FILE"] = "/dev/null"
    env["TF_IN_AUTOMATION"] = "1"
    env["CHECKPOINT_DISABLE"] = "1"
    return env


def _evaluate(workdir: Path, modules: dict[str, str], expression: str) -> Any:
    """Evaluate ``expression`` with terraform console in a throwaway root calling ``modules``."""
    calls = "\n".join(
        f'module "{name}" {{\n  source = "{TERRAFORM_DIR / "modules" / name.split("__")[0]}"\n'
        f"{body}\n}}\n"
        for name, body in modules.items()
    )
    (workdir / "main.tf").write_text(calls, encoding="utf-8")
    env = _terraform_env()
    subprocess.run(
        ["terraform", "init", "-backend=false", "-input=false", "-no-color"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    result = subprocess.run(
        ["terraform", "console", "-no-color"],
        cwd=workdir,
        env=env,
        input=f"jsonencode({expression})\n",
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return json.loads(json.loads(result.stdout))


def _expected_subscriptions(topology: Topology) -> dict[str, dict[str, Any]]:
    return {
        sub.name: {
            "topic": sub.topic,
            "step": sub.step,
            "ack_deadline_seconds": sub.ack_deadline_seconds,
            "message_retention_seconds": sub.message_retention_seconds,
            "retry": sub.retry.model_dump() if sub.retry else None,
            "dead_letter_topic": sub.dead_letter_topic,
            "max_delivery_attempts": sub.max_delivery_attempts,
        }
        for sub in topology.subscriptions()
    }


def _expected_publish_grants(topology: Topology) -> dict[str, dict[str, str]]:
    grants: dict[str, dict[str, str]] = {}
    for name, step in topology.steps.items():
        topics = list(step.publishes)
        if step.trigger.topic is not None:
            topics.append(topology.dead_letter_topic_of(step.trigger.topic))
        for topic in topics:
            grants[f"{name}/{topic}"] = {"step": name, "topic": topic}
    return grants


# Exercises what the real file does not (yet): a step's own retry and delivery attempts, a
# topic without a hold, a step publishing to nothing.
_SYNTHETIC = {
    "version": 1,
    "defaults": {
        "ack_deadline_seconds": 30,
        "message_retention_seconds": 3600,
        "retry": {"minimum_backoff_seconds": 5, "maximum_backoff_seconds": 300},
        "max_delivery_attempts": 7,
    },
    "topics": {
        "a.in": {"description": "in", "message": "A"},
        "b.mid": {"description": "mid", "message": "B"},
        "c.out": {"description": "out", "message": "C"},
    },
    "steps": {
        "front": {
            "source": "functions/front",
            "entry_point": "front",
            "trigger": {"type": "http"},
            "publishes": ["a.in"],
            "local_port": 9001,
        },
        "first": {
            "source": "functions/first",
            "entry_point": "first",
            "trigger": {"type": "pubsub", "topic": "a.in"},
            "publishes": ["b.mid"],
            "local_port": 9002,
            "retry": {"minimum_backoff_seconds": 1, "maximum_backoff_seconds": 60},
            "max_delivery_attempts": 20,
        },
        "second": {
            "source": "functions/second",
            "entry_point": "second",
            "trigger": {"type": "pubsub", "topic": "b.mid"},
            "local_port": 9003,
        },
    },
    "holds": {"c.out.keep": {"topic": "c.out", "description": "kept"}},
    # no time zone and no message: the defaults must agree too
    "schedules": {"tick": {"topic": "a.in", "cron": "*/5 * * * 1-5", "description": "tick"}},
}


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not on PATH")
    workdir = tmp_path_factory.mktemp("tf-derive")
    synthetic = workdir / "synthetic.yaml"
    synthetic.write_text(yaml.safe_dump(_SYNTHETIC), encoding="utf-8")
    return dict(
        _evaluate(
            workdir,
            {
                "topology": f'  topology = yamldecode(file("{PIPELINE}"))',
                "topology__synthetic": f'  topology = yamldecode(file("{synthetic}"))',
                "spanner_ddl": f'  schema_sql = file("{SCHEMA_SQL}")',
            },
            "{real = module.topology, synthetic = module.topology__synthetic,"
            " ddl = module.spanner_ddl.statements,"
            " retention = module.spanner_ddl.retention_days}",
        )
    )


@pytest.mark.parametrize("which", ["real", "synthetic"])
def test_terraform_derives_the_same_topology_as_python(
    evaluated: dict[str, Any], which: str
) -> None:
    topology = load_topology() if which == "real" else Topology.model_validate(_SYNTHETIC)
    derived = evaluated[which]
    assert sorted(derived["topics"]) == sorted(topology.all_topics())
    dead_letter_of = {
        name: topic["dead_letter_of"]
        for name, topic in derived["topics"].items()
        if topic["dead_letter_of"] is not None
    }
    assert dead_letter_of == {
        topology.dead_letter_topic_of(t): t for t in topology.trigger_topics()
    }
    assert derived["subscriptions"] == _expected_subscriptions(topology)
    assert derived["publish_grants"] == _expected_publish_grants(topology)
    assert set(derived["pubsub_steps"]) == {
        n for n, s in topology.steps.items() if s.trigger.type == "pubsub"
    }
    assert set(derived["http_steps"]) == {
        n for n, s in topology.steps.items() if s.trigger.type == "http"
    }
    for name, step in topology.steps.items():
        assert derived["steps"][name]["env"] == step.env
        assert derived["steps"][name]["asgi"] == step.asgi
        assert derived["steps"][name]["concurrency"] == step.concurrency
        assert derived["steps"][name]["memory"] == step.memory
        assert derived["steps"][name]["max_instances"] == step.max_instances
        assert derived["steps"][name]["entry_point"] == step.entry_point
    assert derived["schedules"] == {
        name: schedule.model_dump() for name, schedule in topology.schedules.items()
    }
    assert derived["schedules"], "both topologies have a schedule to compare"
    assert derived["dead_letter_holds"] == sorted(
        s.name for s in topology.subscriptions() if s.name.endswith(".dlq.hold")
    )


def test_calls_expire_in_spanner_after_the_retention_the_buckets_use(
    evaluated: dict[str, Any], root: dict[str, list[Any]]
) -> None:
    from callpipe.config import Settings

    default = _named(root, "variable")["retention_days"]["default"]
    # what the precondition on the database compares with var.retention_days
    assert evaluated["retention"] == [default] == [Settings().retention_days]
    expiring = [s for s in evaluated["ddl"] if "ROW DELETION POLICY" in s]
    assert [s.split("(")[0].split()[-1] for s in expiring] == ["WebhookEvents", "Calls"]
    database = _typed(root, "resource")[("google_spanner_database", "main")]
    [precondition] = database["lifecycle"][0]["precondition"]
    assert "module.spanner_ddl.retention_days" in precondition["condition"]
    assert "var.retention_days" in precondition["condition"]


def test_terraform_splits_the_ddl_like_python(evaluated: dict[str, Any]) -> None:
    expected = read_ddl_statements(SCHEMA_SQL.read_text(encoding="utf-8"))
    assert evaluated["ddl"] == expected
    assert len(expected) > 1


@needs_terraform
def test_terraform_fmt_check() -> None:
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-no-color", str(TERRAFORM_DIR)],
        env=_terraform_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"unformatted: {result.stdout}{result.stderr}"


# --- cloudbuild.yaml ---------------------------------------------------------------------


def test_cloudbuild_matches_the_cloud_build_schema() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.cloudbuild",
            str(CLOUDBUILD),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def cloudbuild() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(CLOUDBUILD.read_text(encoding="utf-8"))
    return data


def _step_text(step: dict[str, Any]) -> str:
    script = [
        line
        for line in str(step.get("script", "")).splitlines()
        if not line.lstrip().startswith("#")
    ]
    return " ".join([*script, *map(str, step.get("args", []))])


def _prerequisites(steps: list[dict[str, Any]], index: int) -> set[str]:
    """Ids of the steps that finish before ``steps[index]`` starts, as Cloud Build orders them:
    a step without waitFor waits for every step listed before it."""
    ids = [step["id"] for step in steps]
    direct = steps[index].get("waitFor")
    if direct is None:
        direct = ids[:index]
    found: set[str] = set()
    for dep in direct:
        if dep != "-" and dep not in found:
            found.add(dep)
            found |= _prerequisites(steps, ids.index(dep))
    return found


def test_cloudbuild_tests_then_migrates_then_applies(cloudbuild: dict[str, Any]) -> None:
    steps = cloudbuild["steps"]
    ids = [step["id"] for step in steps]

    def step_running(fragment: str) -> int:
        matches = [i for i, step in enumerate(steps) if fragment in _step_text(step)]
        assert len(matches) == 1, f"expected one step running {fragment!r}, got {matches}"
        return matches[0]

    checks = {
        fragment: ids[step_running(fragment)]
        for fragment in (
            "pytest tests/unit",
            "ruff check",
            "mypy",
            "fmt -check -recursive",
            "callpipe deploy bundle",
            "callpipe deploy ddl",
            "-out=tfplan",
            "apply -input=false tfplan",
        )
    }
    bundle = _prerequisites(steps, step_running("callpipe deploy bundle"))
    assert {checks["pytest tests/unit"], checks["ruff check"], checks["mypy"]} <= bundle
    assert checks["fmt -check -recursive"] in bundle
    assert checks["callpipe deploy bundle"] in _prerequisites(steps, step_running("deploy ddl"))
    apply = _prerequisites(steps, step_running("apply -input=false tfplan"))
    assert {checks["callpipe deploy ddl"], checks["-out=tfplan"]} <= apply
    init = steps[ids.index("terraform-init")]["args"]
    assert "-backend-config=bucket=${_TF_STATE_BUCKET}" in init


def test_one_retention_reaches_both_the_schema_check_and_terraform(
    cloudbuild: dict[str, Any],
) -> None:
    steps = {step["id"]: step for step in cloudbuild["steps"]}
    assert "RETENTION_DAYS=${_RETENTION_DAYS}" in steps["migrate-schema"]["env"]
    assert "TF_VAR_retention_days=${_RETENTION_DAYS}" in steps["terraform-plan"]["env"]
    assert cloudbuild["substitutions"]["_RETENTION_DAYS"] == "2555"


def test_cloudbuild_substitutions_are_declared(cloudbuild: dict[str, Any]) -> None:
    declared = set(cloudbuild["substitutions"])
    assert {"_PROJECT_ID", "_REGION", "_ENV", "_TF_STATE_BUCKET"} <= declared
    used = set(re.findall(r"\$\{?(_[A-Z0-9_]+)", CLOUDBUILD.read_text(encoding="utf-8")))
    assert used <= declared


@pytest.mark.parametrize(
    ("given", "listed"),
    [
        ("", "[]"),
        ("ops@example.com", '["ops@example.com"]'),
        (" a@x.io  b@y.org ", '["a@x.io","b@y.org"]'),
    ],
)
def test_the_alert_emails_reach_terraform_as_a_list(
    cloudbuild: dict[str, Any], tmp_path: Path, given: str, listed: str
) -> None:
    """The plan step's script, run with a stand-in terraform that prints what it got."""
    (step,) = [s for s in cloudbuild["steps"] if s["id"] == "terraform-plan"]
    stub = tmp_path / "terraform"
    stub.write_text('#!/bin/sh\nprintf "%s|%s" "$TF_VAR_alert_emails" "$*"\n', encoding="utf-8")
    stub.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin", "_ALERT_EMAILS": given}
    ran = subprocess.run(
        ["sh", "-c", step["script"]], env=env, capture_output=True, text=True, timeout=30
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"{listed}|plan -input=false -out=tfplan"
    assert "_ALERT_EMAILS" in cloudbuild["substitutions"]
