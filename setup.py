"""Packaging for dualwatch. Tool settings live in pyproject.toml."""

import re
from pathlib import Path

from setuptools import Extension, find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "dualwatch" / "_version.py").read_text()).group(1)

EXTRAS = {
    "torch": ["torch>=2.1"],
    "paddle": ["paddlepaddle>=2.6"],
    "visualdl": ["visualdl>=2.5"],
    "tensorboard": ["tensorboard>=2.10", "crc32c>=2.0"],
    "plot": ["matplotlib>=3.5"],
    "edge": ["opencv-python-headless>=4.5"],
    "lightning": ["lightning>=2.0"],
    # mmengine-lite: MMEngine without its pull of OpenCV's GUI build; its runner imports cv2.
    "mmengine": ["mmengine-lite>=0.10", "opencv-python-headless>=4.5"],
    # ZeRO-2/3 jobs (Watcher(engine)); on the CPU its first run compiles a small comm op with g++.
    "deepspeed": ["deepspeed>=0.14"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})
# tbparse and wandb: the peers bench/reader.py and bench/overhead.py measure against; jsonargparse
# and omegaconf: LightningCLI and seed 000's ``target``/``params`` YAML, as the tests use them;
# playwright: drives the OS's Chromium in the real-browser test (it downloads no browser here).
EXTRAS["test"] = [
    "pytest>=7",
    "ruff>=0.5",
    "tbparse>=0.0.9",
    "jsonargparse[signatures]>=4.27",
    "omegaconf>=2.1",
    "wandb>=0.16",
    "playwright>=1.40",
]

setup(
    name="dualwatch",
    version=VERSION,
    description="Training telemetry for PyTorch and PaddlePaddle, for VisualDL and TensorBoard at once",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["dualwatch", "dualwatch.*"]),
    install_requires=["numpy>=1.21", "click>=8.0", "rich>=13", "pyyaml>=5.1"],
    extras_require=EXTRAS,
    # Optional: without a C compiler the install still succeeds; CPU checks then use framework ops,
    # the writer encodes scalars with protobuf and json (the same bytes, slower), and edge maps use
    # OpenCV and numpy calls around Canny (the same bytes, slower).
    ext_modules=[
        Extension(
            "dualwatch._hoststats", ["dualwatch/_hoststats.c"], extra_compile_args=["-O3"], optional=True
        ),
        Extension(
            "dualwatch._edgehost", ["dualwatch/_edgehost.c"], extra_compile_args=["-O3"], optional=True
        ),
        Extension(
            "dualwatch._scalarcodec", ["dualwatch/_scalarcodec.c"], extra_compile_args=["-O3"], optional=True
        ),
    ],
    entry_points={"console_scripts": ["dualwatch=dualwatch._cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
