"""Inference: a model's synthetic 7T of one volume, a preprocessed cohort, lone 3T files, a batch.

The layout (after nnU-Net's predictor)::

    inference/
      model.py      a model folder: load_model (safetensors, the card's warnings), process_model, lone_grid
      predictor.py  Predictor: a loaded model that knows its kind (U-Net, multi-view, patch baseline, imported), its
                    planes, grid, conditioning and input recipe; Predictor.predict, the one volume prediction
      volume.py     the passes of one volume: 2.5D slices, sliding windows, the authors' recipe
      views.py      multi-view: each plane's slices, the views fused, their spread
      precision.py  fp32 or bf16 autocast
      released.py   the template alignment of an imported model of the authors
      naming.py     prediction_path: the one name of every prediction file
      subjects.py   preprocessed pairs (notebook 03): predict_subjects, collect_images, the 7T and native spaces
      files.py      a lone 3T file (synth7t predict): align_for, predict_file, its sidecar JSON
      ood.py        how far an input is from the training inputs: the card's statistics, the score of a prediction
      batch.py      many files (worker processes, SLURM, torchrun) and several models side by side

Nothing here imports the trainer, the demo or the orchestration; the lone-3T studies
(:mod:`synth7t.studies.lone`) predict through :class:`Predictor` too.
"""

from .batch import batch_output_path, predict_files, predict_many
from .files import check_output, demographics_of, expand_inputs, predict_file
from .model import ModelFolderError, load_model, model_folder
from .naming import SPACES, prediction_path
from .predictor import KINDS, Prediction, Predictor
from .subjects import collect_images, predict_subjects, preprocessed_inputs, to_native_3t, uncrop_to_space

__all__ = ["Predictor", "Prediction", "KINDS", "load_model", "model_folder", "ModelFolderError", "prediction_path",
           "SPACES", "predict_subjects", "collect_images", "preprocessed_inputs", "uncrop_to_space", "to_native_3t",
           "predict_file", "expand_inputs", "check_output", "demographics_of", "predict_files", "predict_many",
           "batch_output_path"]
