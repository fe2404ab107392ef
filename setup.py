from setuptools import find_packages, setup

setup(
    name="longtail_d2",
    version="0.1.0",
    description="Long-tailed instance segmentation methods as a Detectron2 plugin",
    packages=find_packages(include=["longtail_d2", "longtail_d2.*"]),
    python_requires=">=3.10",
    # Every third-party package the code imports (tests/test_install.py checks it), except
    # detectron2: it has no PyPI release (installed under several names, e.g. sal-detectron2),
    # so `import longtail_d2` checks it instead. torch is unpinned here so that
    # `pip install -e .` keeps the torch of an existing environment; tools/setup_env.sh pins
    # the tested torch 2.14.1 and requirements.txt the tested versions of the rest.
    install_requires=[
        "torch",
        "numpy>=1.24",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.6",
        "faster-coco-eval>=1.8.0",
        "higher>=0.2.1",
        "matplotlib>=3.5",
        "tabulate",
        "Pillow",
        "PyYAML",
        "scikit-learn>=1.0",
    ],
)
