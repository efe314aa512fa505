"""Procedural synthetic faces with exact FSE-25 label maps, five landmarks and identities.

``python -m parsing.synth --out DIR --identities N --images-per-identity M --seed S`` writes a
data set; :class:`SynthFaces` reads it; :func:`generate` renders one in memory.
"""

from parsing.synth.dataset import SynthFaces, generate, render_index, write_dataset
from parsing.synth.genes import GENE_GROUPS, bound_groups
from parsing.synth.render import Face, render_face

__all__ = ["GENE_GROUPS", "Face", "SynthFaces", "bound_groups", "generate", "render_face",
           "render_index", "write_dataset"]
