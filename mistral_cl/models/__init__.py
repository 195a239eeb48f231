"""Pretrained weights shipped inside the package, loaded by name with `--weights NAME` through the same
Hugging Face loader as any weights directory (Mistral-7B included). Each has a model card (README.md)
with its corpus, training, held-out loss and the command that reproduces it."""

from __future__ import annotations

from pathlib import Path

from mistral_cl.errors import InputError

SHIPPED = ("chem-small",)


def weights_directory(value: str) -> str:
    """The weights directory `--weights value` names: a shipped model's, or the path given."""
    if value in SHIPPED:
        path = Path(__file__).resolve().parent / value
        if not (path / "model.safetensors").is_file():
            raise InputError(f"the shipped model {value} is missing from this installation", file=str(path),
                             hint="reinstall mistral-cl, or pass a weights directory")
        return str(path)
    return str(Path(value).resolve())


def weights_name(directory: str) -> str:
    """How to name the weights in `directory` in a report: a shipped model by its name (its directory
    depends on where the package is installed), any other by its path."""
    path = Path(directory).resolve()
    here = Path(__file__).resolve().parent
    return f"{path.name} (shipped)" if path.parent == here and path.name in SHIPPED else str(path)
