"""The built-in devices' names and default tracker ports on 127.0.0.1.

Apart from their kinds because three parts of the device layer need them and none should import another for
them: the kinds that define the devices (local.py, cuda.py), the farm that serves them under these keys
(farm.py, which the kinds themselves start), and the profile loader that reserves the names (profile.py).
"""

LOCAL = "local"
LOCAL_DEFAULT_PORT = 9190
LOCAL_GPU = "local-gpu"
LOCAL_GPU_DEFAULT_PORT = 9290
