"""Training: the engine (device, precision, compile), the Trainer loop, callbacks, optimizers."""
