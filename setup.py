from setuptools import find_packages, setup

setup(
    name="longtail_d2",
    version="0.1.0",
    description="Long-tailed instance segmentation methods as a Detectron2 plugin",
    packages=find_packages(include=["longtail_d2", "longtail_d2.*"]),
    python_requires=">=3.10",
    # torch, torchvision and detectron2 are installed by tools/setup_env.sh (see README):
    # detectron2 has no PyPI release and torch builds differ per machine.
    install_requires=[
        "numpy>=1.24",
        "fvcore>=0.1.5",
        "pycocotools>=2.0.6",
        "faster-coco-eval>=1.8.0",
        "higher>=0.2.1",
        "matplotlib",
        "tabulate",
    ],
)
