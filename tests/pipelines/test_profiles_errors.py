"""A profiles file that cannot be used, or a compile output that cannot be written: from `compile` and from
`submit`, one `error:` line naming the file (and the profile and key), exit 2, no traceback, nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.__main__ import main

CASES = [
    ("malformed-yaml", "cpu: {gpu: [unclosed\n", ["is not valid YAML at line"]),
    ("a-list", "- cpu\n- onprem\n", ["holds a list", "must be a mapping of profile name"]),
    ("a-scalar", "just text\n", ["holds a str"]),
    ("profile-is-a-string", "cpu: a CPU cluster\n", ["Profile 'cpu'", "is a str", "must be a mapping"]),
    ("profile-is-a-list", "cpu: [gpu, feast]\n", ["Profile 'cpu'", "is a list"]),
    ("gpu-is-a-string", "cpu: {gpu: nvidia.com/gpu}\n", ["Profile 'cpu'", "'gpu' entry", "a mapping is needed"]),
    ("feast-is-a-string", "cpu: {feast: feast-store}\n", ["Profile 'cpu'", "'feast' entry"]),
    ("mlflow-is-a-list", "cpu: {mlflow: [http://m:5000]}\n", ["Profile 'cpu'", "'mlflow' entry"]),
    (
        "tolerations-not-mappings",
        "cpu: {gpu: {accelerator_type: nvidia.com/gpu, tolerations: [nvidia.com/gpu]}}\n",
        ["Profile 'cpu'", "'gpu.tolerations'"],
    ),
    (
        "node-selector-a-list",
        "cpu: {gpu: {accelerator_type: nvidia.com/gpu, node_selector: [a]}}\n",
        ["Profile 'cpu'", "'gpu.node_selector'"],
    ),
    ("not-utf8", b"cpu: {description: \xff\xfe}\n", ["is not UTF-8"]),
    (
        "serving-bad-quantity",
        "cpu: {serving: {service_account: bert-kserve, resources: {limits: {memory: lots}}}}\n",
        ["Profile 'cpu'", "'serving' entry", "limits.memory: 'lots' is not a Kubernetes quantity"],
    ),
    (
        "serving-bad-account",
        "cpu: {serving: {service_account: Bert_KServe}}\n",
        ["Profile 'cpu'", "'serving' entry", "'Bert_KServe' is not a ServiceAccount name"],
    ),
]


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _one_error(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return err[0]


@pytest.mark.parametrize(("text", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_compile_names_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | bytes, words: list[str]
) -> None:
    path = _write(tmp_path, text)
    output = tmp_path / "out" / "p.yaml"
    code = main(["compile", "--profile", "cpu", "--profiles-file", str(path), "--output", str(output)])
    line = _one_error(capsys)
    assert code == 2 and str(path) in line and all(w in line for w in words), line
    assert not output.exists()


@pytest.mark.parametrize(("text", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_submit_names_the_file_and_key(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    text: str | bytes,
    words: list[str],
) -> None:
    """No KFP endpoint is asked: the host is a closed loopback port, which would be exit 1 if it were reached."""
    monkeypatch.setenv("KFP_HOST", "http://127.0.0.1:9")
    path = _write(tmp_path, text)
    argv = ["submit", "--profile", "cpu", "--profiles-file", str(path), "--package", str(tmp_path / "p.yaml")]
    code = main([*argv, "--data", "s3://b/r.csv"])
    line = _one_error(capsys)
    assert code == 2 and str(path) in line and all(w in line for w in words), line


@pytest.mark.parametrize(
    ("output", "words"),
    [("/proc/bert-kfp.yaml", "No such file or directory"), ("/proc/self/bert-kfp/p.yaml", "")],
    ids=["in-proc", "under-proc-self"],
)
def test_compile_to_an_unwritable_path_is_one_error(
    capsys: pytest.CaptureFixture[str], output: str, words: str
) -> None:
    """/proc takes no new file or directory, even from root."""
    code = main(["compile", "--profile", "cpu", "--output", output])
    line = _one_error(capsys)
    assert code == 2 and output in line and "Cannot write the compiled pipeline" in line and words in line, line


def test_compile_to_a_directory_is_one_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["compile", "--profile", "cpu", "--output", str(tmp_path)])
    line = _one_error(capsys)
    assert code == 2 and "Is a directory" in line, line
