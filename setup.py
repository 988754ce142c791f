"""What pyproject.toml cannot say: the wheel carries the built-in codecs and MNIST.

The repository keeps them where users see them (``codecs/``, ``data/mnist/``); the wheel maps
them into the package under private names (``psgd/_codecs/``, ``psgd/_data/mnist/``), where
``psgd.loader.BUILTIN_CODECS_DIR`` and ``psgd.data.mnist.DEFAULT_DATA_DIR`` find them.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["psgd", "psgd.*"]), "psgd._codecs", "psgd._data.mnist"],
    package_dir={"psgd._codecs": "codecs", "psgd._data.mnist": "data/mnist"},
    package_data={
        "psgd._codecs": ["*.py"],
        "psgd._data.mnist": ["*.gz", "SHA256SUMS", "README.md"],
    },
)
