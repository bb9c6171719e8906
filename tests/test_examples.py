"""The scripts in examples/ run as a user runs them (a subprocess, from another folder), in their tiny
LAMINA_EXAMPLE_FAST=1 mode, and print what they achieved."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = {
    "mlp_digits.py": "MLP test accuracy",
    "cnn_digits.py": "reloaded model agrees: True",
    "unet_segmentation.py": "mean IoU",
    "autoencoder_digits.py": "test reconstruction MSE",
    "vae_digits.py": "VAE loss",
    "gan_digits.py": "GAN after",
}


def test_every_example_is_tested():
    assert sorted(f for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py")) == sorted(EXAMPLES)


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs(script, tmp_path):
    env = dict(os.environ, LAMINA_EXAMPLE_FAST="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert EXAMPLES[script] in proc.stdout, proc.stdout[-2000:]
