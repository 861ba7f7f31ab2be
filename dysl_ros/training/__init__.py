"""The offline pipeline behind `dysl_train`: demonstrations, behaviour cloning, calibration, distillation."""
