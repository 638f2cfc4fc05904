"""A stand-in for Colab's ``google.colab`` (rehearsals only; see scripts/colab_stub/README.md).

Importing it is what makes ``"google.colab" in sys.modules`` true, the test every lesson's set-up
cell uses to decide that it runs on Colab.
"""

from google.colab import output, userdata

__all__ = ["output", "userdata"]
IS_STUB = True  # the real package has no such name: a rehearsal checks it runs against this one
