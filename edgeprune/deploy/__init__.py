"""Deploy stage: artifact folders to boards over SSH. Reaching and controlling the board (SSH, the board runner,
its RPC server) is the device layer's, in `edgeprune.devices.remote`; deploy only moves and checks artifacts.

deployment.deploy_artifact(folder, device, ...)  upload, verify sha256 on the board, smoke run, rename into place
artifact.load_upload(folder)                     the checked artifact folder and the digest of every file to send
"""
