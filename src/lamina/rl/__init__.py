"""Game playing: vectorised environments, a replay buffer on the device, Double DQN and its loop.

``lamina play minatar/breakout --frames 1M`` (see :mod:`lamina.rl.play`) trains and writes a run
folder like ``lamina train``; the loop (:mod:`lamina.rl.loop`) satisfies the loop protocol, so
the Trainer's callbacks (progress, metrics, checkpoints, time limit, energy) serve it unchanged.
"""
