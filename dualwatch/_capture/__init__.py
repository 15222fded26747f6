from dualwatch._capture._monitor import Monitor, MonitoredTrainer

__all__ = ["Monitor", "MonitoredTrainer"]
