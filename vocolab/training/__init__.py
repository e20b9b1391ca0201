"""Training: the LightningModules of every stage, the distillation objectives, the one
`Trainer` factory, the recipe that chains the stages, and the LightningCLI entry."""

from vocolab.training.distill import OBJECTIVES, DistillModule, answer_kl, text_hidden_mse
from vocolab.training.loading import load_model
from vocolab.training.mod import MoDModule
from vocolab.training.modules import ClipModule, VLMModule
from vocolab.training.recipe import Trained, fine_tune, run_recipe, vlm_stage
from vocolab.training.trainer import make_trainer

__all__ = ["OBJECTIVES", "ClipModule", "DistillModule", "MoDModule", "Trained", "VLMModule", "answer_kl",
           "fine_tune", "load_model", "make_trainer", "run_recipe", "text_hidden_mse", "vlm_stage"]
