"""Hostile input through the real CLI entry point: any arguments give a result or one line.

Hypothesis draws whole command lines (a command, then options and values from the CLI's own
vocabulary mixed with random text, odd paths, SQL and format strings, unicode) and runs
``runner.cli.main`` on them: in process for many examples, and in a subprocess for a few. Every
run must exit 0, 1 (a runtime error: no such job) or 2 (bad input), print no traceback, and on a
non-zero exit print exactly one line starting with ``error:``. No example starts a container:
the only spec files offered are broken or refused before anything runs.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner import cli

ROOT = Path(__file__).resolve().parents[2]
_TMP = Path(tempfile.mkdtemp(prefix="hostile-cli-"))  # made at import: the strategies below name its files
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)  # ... and removed when the session ends
SPECS = {
    "missing": str(_TMP / "no-such.yaml"),
    "folder": str(_TMP),
    "devnull": "/dev/null",
    "binary": str(_TMP / "binary.yaml"),
    "bad-yaml": str(_TMP / "bad.yaml"),
    "aws-file-uri": str(_TMP / "aws-file.yaml"),
    "traversal": "../../../../etc/passwd",
}
(_TMP / "binary.yaml").write_bytes(bytes(range(256)) * 4)
(_TMP / "bad.yaml").write_text("name: [unclosed\nimage: {\n")
(_TMP / "aws-file.yaml").write_text((ROOT / "jobs" / "cifar-smoke.yaml").read_text().replace(
    "backend: local", "backend: aws").replace("checkpoint:\n", "checkpoint:\n  uri: file:///tmp/ck\n"))

NASTY = st.sampled_from(["", " ", "-", "--", "x' OR '1'='1", "%s%n%x", "{0.__class__}", "../../etc/passwd",
                         "\u202eltr", "😀", "a" * 300, "-1", "nan", "inf", "1e309", "0", "=", "a=b=c",
                         "aws.max_vcpus=", "every=", "every=-5s", "mode=bus,count=-1", "[", "{a: 1}",
                         "$(touch /tmp/pwned)", "`id`", "\n\nerror"])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
VALUE = st.one_of(NASTY, TEXT, st.integers(-10**12, 10**12).map(str), st.floats().map(str),
                  st.sampled_from(list(SPECS.values())))
OPTIONS = st.sampled_from(["--backend", "--simulate-preemption", "--interval", "--json", "--attempt", "-f",
                           "--follow", "--file", "--live", "--spec", "--set", "--once", "--out", "--bogus",
                           "--help", "-x", "--interval=", "--json=yes"])
COMMANDS = {
    "submit": st.sampled_from(list(SPECS.values())).map(lambda p: [p]),
    "status": st.lists(VALUE, max_size=2),
    "logs": st.lists(VALUE, max_size=2),
    "cancel": st.lists(VALUE, max_size=2),
    "prices": st.lists(st.one_of(st.sampled_from(["aws", "gcp", "azure", "us-east-1", "g4dn.xlarge"]), VALUE),
                       max_size=3),
    "report": st.lists(VALUE, max_size=2),
    "init": st.tuples(st.one_of(st.sampled_from(["aws", "gcp", "azure"]), VALUE),
                      st.sampled_from(["--spec", "--set"]), st.sampled_from(list(SPECS.values()))).map(list),
    "bogus-command": st.just([]),
}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    name = draw(st.sampled_from(sorted(COMMANDS)))
    args = [name, *draw(COMMANDS[name])]
    for _ in range(draw(st.integers(0, 3))):
        option = draw(OPTIONS)
        if option in ("--out",):  # never write reports outside the scratch folder
            args += [option, str(_TMP / "reports")]
            continue
        args.append(option)
        if draw(st.booleans()):
            args.append(draw(VALUE))
    if "--live" in args or ("init" in args and not any(a in args for a in ("--spec",))):
        args = [a for a in args if a != "--live"]
    return args


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    path = _TMP / "home"
    path.mkdir(exist_ok=True)
    yield path


def _check(code: int, out: str, err: str, args: list[str]) -> None:
    assert code in (0, 1, 2), (args, code, out, err)
    assert "Traceback" not in out + err, (args, out, err)
    if code != 0:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, code, err)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=command_lines())
def test_any_command_line_gives_a_result_or_one_line(home: Path, args: list[str],
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    if "--help" in args:
        args = [a for a in args if a != "--help"]  # help is not an error; covered by the CLI tests
    monkeypatch.setenv("RUNNER_HOME", str(home))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(sys, "argv", ["runner", *args])
    capsys.readouterr()
    with pytest.raises(SystemExit) as ended:
        cli.main()
    out, err = capsys.readouterr()
    code = ended.value.code if isinstance(ended.value.code, int) else (0 if ended.value.code is None else 1)
    _check(code, out, err, args)
    assert not Path("/tmp/pwned").exists()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=command_lines())
def test_command_lines_through_the_console_script(home: Path, args: list[str]) -> None:
    args = [a for a in args if a != "--help"]
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT), "AWS_EC2_METADATA_DISABLED": "true"}
    proc = subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    _check(proc.returncode, proc.stdout, proc.stderr, args)


@pytest.mark.parametrize("args", [["submit", "--bogus"], ["status", "a", "b"], ["watch", "--interval", "abc"],
                                  ["prices", "--file"], ["submit"], ["nosuchcommand"]])
def test_regression_usage_errors_are_one_line_not_a_box(home: Path, args: list[str]) -> None:
    """Found by the hypothesis test: click's usage errors printed a 5-line box (Usage, Try, a frame)."""
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "runner.cli", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and "--help" in proc.stderr


def test_regression_control_characters_in_errors_stay_one_line(home: Path) -> None:
    """Found by the hypothesis test: ``runner logs $'\\x1e'`` printed the raw separator (two lines)
    and an ANSI escape in a job id reached the terminal as is."""
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    for job_id in ["\x1e", "a\x1b[31mred\nb", "\u2028x"]:
        proc = subprocess.run([sys.executable, "-m", "runner.cli", "logs", job_id], capture_output=True, text=True,
                              env=env, cwd=ROOT, timeout=60)
        assert proc.returncode in (1, 2) and len(proc.stderr.splitlines()) == 1, repr(proc.stderr)
        assert "\x1b" not in proc.stderr and "\x1e" not in proc.stderr


def test_regression_logs_of_an_unknown_job_says_there_is_no_such_job(home: Path) -> None:
    """Found by the hypothesis test: it said "job X has no submitted attempt yet", as if X existed."""
    env = {**os.environ, "RUNNER_HOME": str(home), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "logs", "never-submitted"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 1 and proc.stderr.startswith("error: no job 'never-submitted'"), proc.stderr
