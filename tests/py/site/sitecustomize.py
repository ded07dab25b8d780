"""Loaded at start-up by every Python the Rust tests run (scripts/test puts
this folder on PYTHONPATH for `cargo test`).

webdataset's package __init__ imports torch when torch is installed, and
.venv has torch for the Python package's DataLoader tests: that costs about
2 s per interpreter start, and the interop tests start hundreds. The module
they test, webdataset.tenbin, needs only numpy, so torch is hidden from
them: `import torch` raises ImportError, which webdataset handles. The
package's own pytest suite runs without this folder and imports torch.
"""

import sys

sys.modules.setdefault("torch", None)
