"""cosim: co-simulation of decentralized LoRA fine-tuning over device-to-device wireless links."""

__version__ = "0.1.0"
