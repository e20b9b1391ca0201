"""Training: the LightningModules of every stage, the distillation objectives, the one
`Trainer` factory, the recipe that chains the stages, and the LightningCLI entry."""
