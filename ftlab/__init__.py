"""ftlab: fine-tuning pretrained models on a budget.

A course (the notebooks in ``notebooks/``) and the small package every lesson imports.
Each module holds one idea; the lesson that teaches it says which.
"""

__version__ = "0.7.0"

# The one place that names the repository. Badges, the Colab install line and the README are
# built from it (scripts/badges.py); a fork changes this line and re-runs that script.
REPO_URL = "https://github.com/ftlab-course/ftlab"
