import os
import sys

import torch

# PETSc reads sys.argv when pnode is imported; pytest's own flags are not PETSc options.
sys.argv = sys.argv[:1]
sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(1)
