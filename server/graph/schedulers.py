"""Scheduler names of the contract. The diffusers classes behind them are imported only when a graph runs."""

SCHEDULER_NAMES = ("ddim", "ddpm", "euler", "euler_a", "heun", "lms", "pndm", "dpmpp_2m", "dpmpp_2m_k", "unipc")
