"""kid: knowledge distillation of text-to-SQL language models in JAX/Flax."""

import pathlib

import setuptools

# Pinned to the versions tested on the development machine (CPU, Python 3.11).
INSTALL_REQUIRES = [
    "jax==0.10.2",
    "jaxlib==0.10.2",
    "flax==0.12.8",
    "optax==0.2.8",
    "orbax-checkpoint==0.12.8",
    "chex==0.1.92",
    "ml-collections==1.1.0",
    "sqlglot==30.30.0",
    "transformers==5.23.0",
    "tokenizers==0.23.3",
    "safetensors==0.8.0",
    "grain==0.2.18",
    "array-record==0.8.6",
    "tensorflow-datasets==4.9.10",
    "importlib_resources==7.1.0",
    "etils==1.15.0",
    "absl-py==2.5.1",
    "numpy==2.4.6",
    "tqdm==4.70.1",
    "tensorboardX==2.6.5",
    "matplotlib==3.11.2",
    "psutil==7.2.2",
]

TEST_REQUIRES = [
    "pytest==9.2.0",
    "pytest-xdist==3.8.0",
    "hypothesis==6.170.15",
    "filelock==4.3.2",  # fixtures that xdist workers build once (tests/test_predict.py)
    "torch==2.13.0",
]


def shipped_teachers() -> list[tuple[str, list[str]]]:
    """data/teachers/<name>/* installed to <prefix>/share/kid/teachers/<name>/, where
    kid.teachers.resolve finds them after a plain (non-editable) pip install."""
    root = pathlib.Path(__file__).parent
    return [
        (f"share/kid/teachers/{d.name}", [str(f.relative_to(root)) for f in sorted(d.iterdir())])
        for d in sorted((root / "data" / "teachers").glob("*"))
        if d.is_dir()
    ]


setuptools.setup(
    name="kid",
    version="0.1.0",
    description="Knowledge distillation from imperfect data for text-to-SQL, in JAX/Flax.",
    packages=setuptools.find_packages(include=["kid", "kid.*"]),
    python_requires=">=3.10,<3.13",
    install_requires=INSTALL_REQUIRES,
    extras_require={"test": TEST_REQUIRES},
    data_files=shipped_teachers(),
)
