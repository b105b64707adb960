"""Launcher settings: flag > RUNYARD_* variable > YAML file > default."""

from pathlib import Path

import pytest

from runyard.config import LauncherSettings
from runyard.core.errors import InvalidInput
from runyard.launcher.executors import ExecutorError, parse_mount


def test_precedence_is_flag_then_environment_then_file_then_default(tmp_path: Path):
    cfg = tmp_path / "launcher.yaml"
    cfg.write_text("launcher_logs_timeout: 90s\nlauncher_run_timeout: 2h\nworker_network: filenet\n")
    env = {"RUNYARD_LAUNCHER_RUN_TIMEOUT": "1h30m", "RUNYARD_WORKER_NETWORK": "envnet"}
    settings, origin = LauncherSettings.resolve({"worker_network": "flagnet"}, env=env, config_file=cfg)
    assert settings.worker_network == "flagnet" and origin["worker_network"] == "flag"
    assert settings.launcher_run_timeout == 5400 and origin["launcher_run_timeout"].startswith("environment")
    assert settings.launcher_logs_timeout == 90 and origin["launcher_logs_timeout"] == f"file {cfg}"
    assert settings.interruption_grace_period == 120 and origin["interruption_grace_period"] == "default"


def test_an_unknown_key_in_the_file_is_an_error_naming_it(tmp_path: Path):
    cfg = tmp_path / "launcher.yaml"
    cfg.write_text("launcher_logs_timeout: 90s\nlogs_timout: 5m\n")
    with pytest.raises(InvalidInput, match="unknown setting 'logs_timout'"):
        LauncherSettings.resolve({}, env={}, config_file=cfg)


def test_a_bad_value_names_the_setting_and_where_it_came_from():
    with pytest.raises(InvalidInput, match=r"launcher_logs_timeout \(environment"):
        LauncherSettings.resolve({}, env={"RUNYARD_LAUNCHER_LOGS_TIMEOUT": "soon"})


def test_explain_masks_secrets():
    settings, origin = LauncherSettings.resolve({}, env={"RUNYARD_TOKEN": "abc", "RUNYARD_POOL_PRIVATE_KEY": "k"})
    rows = {name: (value, where) for name, value, where in settings.explain(origin)}
    assert rows["token"][0] == "********" and "abc" not in str(rows)
    assert rows["pool_private_key"][1] == "environment (RUNYARD_POOL_PRIVATE_KEY)"


def test_whitelisted_variables_follow_their_prefixes():
    settings, _ = LauncherSettings.resolve(
        {}, env={"RUNYARD_WHITELIST_ENVS": "REGION,ro_READ_TOKEN,wo_DEPLOY_TOKEN", "RUNYARD_MASK_ENVS": "MASKED"}
    )
    launcher_env = {"REGION": "eu", "READ_TOKEN": "r", "DEPLOY_TOKEN": "d", "MASKED": "m", "OTHER": "x"}
    assert settings.passed_env(launcher_env, writes=False) == {"REGION": "eu", "READ_TOKEN": "r", "MASKED": "m"}
    assert settings.passed_env(launcher_env, writes=True) == {"REGION": "eu", "DEPLOY_TOKEN": "d", "MASKED": "m"}


def test_mounts_by_run_kind():
    settings, _ = LauncherSettings.resolve({}, env={
        "RUNYARD_WORKER_EXTRA_MOUNTS": "/a:/a", "RUNYARD_WORKER_RO_EXTRA_MOUNTS": "/r:/r:ro",
        "RUNYARD_WORKER_WO_EXTRA_MOUNTS": "/w:/w"})
    assert settings.mounts(writes=True) == ["/a:/a", "/w:/w"]
    assert settings.mounts(writes=False) == ["/a:/a", "/r:/r:ro"]
    assert parse_mount("/r:/r:ro") == ("/r", "/r", True)
    with pytest.raises(ExecutorError, match="not /host/path"):
        parse_mount("relative:/x")


def test_the_autoscaler_takes_several_pools_from_one_file(tmp_path: Path):
    from runyard.config import AutoscalerSettings

    cfg = tmp_path / "scale.yaml"
    cfg.write_text(
        "endpoint: http://runyard:8765\n"
        "pools:\n"
        "  - {pool: builders, provider: aws, asg_name: g1, min: 0, max: 10}\n"
        "  - {pool: gpu, provider: local, min: 1, max: 2, scale_in_cooldown: 5m}\n"
    )
    settings, _ = AutoscalerSettings.resolve({}, env={}, config_file=cfg)
    assert [p.pool for p in settings.pools] == ["builders", "gpu"]
    assert settings.pools[1].scale_in_cooldown == 300 and settings.pools[0].asg_name == "g1"
    cfg.write_text("pools:\n  - {pool: x, max: 2, maxx: 3}\n")
    with pytest.raises(InvalidInput, match="maxx"):
        AutoscalerSettings.resolve({}, env={}, config_file=cfg)
