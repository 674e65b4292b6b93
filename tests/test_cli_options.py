"""The command line generated from FunADConfig: a flag per field, help, choices, global options."""

import argparse
import re
import subprocess
import sys
from dataclasses import fields

import pytest

import funad
from funad.cli import build_parser, main
from funad.cli.fit import config_overrides
from funad.config import FunADConfig
from funad.features.backbones import list_backbones
from funad.inference.scorers.registry import list_scorers

CONFIG_FIELDS = [f.name for f in fields(FunADConfig)]


def _subparser(command: str) -> argparse.ArgumentParser:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def _config_actions(command: str) -> dict[str, argparse.Action]:
    return {action.dest: action for action in _subparser(command)._actions if action.dest in CONFIG_FIELDS}


@pytest.mark.parametrize("command, left_out", [("fit", set()), ("benchmark", {"seed"})])  # each split has its seed
def test_every_config_field_is_a_flag(command, left_out):
    actions = _config_actions(command)
    assert sorted(actions) == sorted(set(CONFIG_FIELDS) - left_out)
    for name, action in actions.items():
        assert "--" + name.replace("_", "-") in action.option_strings


def test_booleans_have_a_negative_flag():
    booleans = [f.name for f in fields(FunADConfig) if isinstance(getattr(FunADConfig(), f.name), bool)]
    assert {"feature_noise", "mutual_smoothness", "squared_distances"} <= set(booleans)
    actions = _config_actions("fit")
    for name in booleans:
        flag = name.replace("_", "-")
        assert actions[name].option_strings == [f"--{flag}", f"--no-{flag}"]


def test_help_explains_each_setting_and_shows_its_default():
    for name, action in _config_actions("fit").items():
        explanation = re.fullmatch(r"(.*) \(default: .+\)", action.help).group(1)
        assert len(explanation.split()) >= 4, f"--{name} help says too little: {action.help!r}"
    help_text = " ".join(_subparser("fit").format_help().split())  # joined across argparse's line wrapping
    assert "--tau-m FLOAT IRMB threshold on min-max normalised image scores below which an image is a candidate " \
           "normal (paper tau_m, 0-1) (default: 0.5)" in help_text


def test_choices_come_from_the_registry_and_the_annotations():
    actions = _config_actions("fit")
    assert list(actions["backbone"].choices) == list_backbones()
    assert list(actions["scorer"].choices) == list_scorers()
    assert list(actions["level"].choices) == ["patch", "image"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "x", "--out", "y", "--backbone", "no_such_backbone"])


def test_flags_parse_into_the_config():
    args = build_parser().parse_args(["fit", "imgs", "--out", "m", "--tau-m", "0.3", "--no-feature-noise",
                                      "--head-hidden", "512", "64", "--patches-per-image", "all",
                                      "--weights", "none", "--bank-max-patches", "100", "--scorer", "local_net"])
    overrides = config_overrides(args)
    assert set(overrides) == {"tau_m", "feature_noise", "head_hidden", "patches_per_image", "weights",
                              "bank_max_patches", "scorer"}
    config = FunADConfig(**overrides)
    assert config.tau_m == 0.3 and config.feature_noise is False and config.head_hidden == (512, 64)
    assert config.patches_per_image is None and config.weights is None and config.bank_max_patches == 100
    assert config.scorer == "local_net" and config.mutual_smoothness is True


@pytest.mark.parametrize("argv", [["--quiet", "report", "p"], ["report", "p", "--quiet"], ["report", "--quiet", "p"]])
def test_global_options_anywhere(argv):
    args = build_parser().parse_args(argv)
    assert args.quiet is True and args.verbose is False


def test_parsing_and_help_import_no_heavy_library():
    """`funad --help` is instant: building the parser, parsing a command and writing every command's help
    import neither torch nor the other heavy libraries (each command imports what it needs when it runs)."""
    script = """
import sys
from funad.cli import build_parser
parser = build_parser()
parser.parse_args(["fit", "x", "--out", "y", "--scorer", "local_net", "--backbone", "efficientnet_lite0"])
for command in parser._subparsers._group_actions[0].choices.values():
    command.format_help()
print(" ".join(sorted(sys.modules)))
"""
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60)
    loaded = set(completed.stdout.split())
    assert "funad.cli.predict" in loaded  # the check would see a module that is imported
    heavy = {"torch", "timm", "onnx", "onnxruntime", "faiss", "numpy", "sklearn", "scipy", "PIL", "matplotlib"}
    assert not heavy & loaded


def test_global_options_default_off():
    args = build_parser().parse_args(["report", "p"])
    assert args.quiet is False and args.verbose is False


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"funad {funad.__version__}"


def test_verbose_shows_the_traceback(tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.png").write_bytes(b"not a png")  # too few usable images to fit
    command = ["fit", str(images), "--out", str(tmp_path / "m"), "--no-cache"]
    assert main(command) == 1
    quiet_error = capsys.readouterr().err
    assert "usable training images" in quiet_error and "Traceback" not in quiet_error
    assert main([*command, "--verbose"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_an_unknown_option_is_reported_with_its_commands_usage_and_the_nearest_option(capsys):
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["predict", "model", "images", "--out", "o", "--treshold", "5"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage: funad predict") and "did you mean --threshold?" in error
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "images", "--out", "m", "--bogus"])
    assert "unrecognized arguments: --bogus\n" in capsys.readouterr().err  # nothing near enough to suggest
