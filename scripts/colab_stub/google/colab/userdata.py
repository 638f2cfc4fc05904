"""``google.colab.userdata``: Colab's secrets (the key icon). Here a secret ``NAME`` is the
environment variable ``COLAB_SECRET_NAME``; unset, ``get`` raises as Colab does."""

import os


class SecretNotFoundError(KeyError):
    """Colab raises this when the notebook has no secret of that name."""


class NotebookAccessError(PermissionError):
    """Colab raises this when the secret exists but this notebook may not read it."""


def get(key: str) -> str:
    value = os.environ.get(f"COLAB_SECRET_{key}")
    if value is None:
        raise SecretNotFoundError(f"Secret {key} does not exist.")
    return value
