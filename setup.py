"""Package layout (everything else is in pyproject.toml).

The Hydra configs live in the top-level ``conf/`` folder and ship as the package ``reidgen.conf``
(``pkg://reidgen.conf`` in the entry points), so a wheel carries them and an editable install reads
the folder live. Automatic discovery only sees ``src/``, so the mapped package is added here.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages("src"), "reidgen.conf"],
    package_dir={"": "src", "reidgen.conf": "conf"},
)
