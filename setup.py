"""Package layout (everything else is in pyproject.toml).

The Hydra configs live in the top-level ``conf/`` folder and ship as the package ``reidgen.conf``
(``pkg://reidgen.conf`` in the entry points), so a wheel carries them and an editable install reads
the folder live. Automatic discovery only sees ``src/``, so the mapped package and its config
group folders are listed here, each with its YAML files as package data.
"""

from setuptools import find_namespace_packages, find_packages, setup

CONFIG_PACKAGES = [
    "reidgen.conf",
    *(
        f"reidgen.conf.{group}"
        for group in find_namespace_packages("conf", exclude=["__pycache__", "*.__pycache__"])
    ),
]

setup(
    packages=[*find_packages("src"), *CONFIG_PACKAGES],
    package_dir={"": "src", "reidgen.conf": "conf"},
    package_data={package: ["*.yaml"] for package in CONFIG_PACKAGES},
)
