"""Deploy stage: artifact folders to boards over SSH, and the TVM RPC server on boards.

deployment.deploy_artifact(folder, device, ...)  upload, verify sha256 on the board, smoke run, rename into place
board.bootstrap / board.stop / board.status       the board's rpc_server, registered with the device's tracker
ssh.connect / ssh.connection                      paramiko with verified host keys (key file or ssh-agent)
board_runner.py                                   the standalone script run on the board (stdlib, numpy, TVM runtime)
"""
