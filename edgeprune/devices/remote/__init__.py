"""Controlling a board over SSH: the device layer's job, so every stage (deploy, a kind's `serving()`, the CLI's
`board` commands) reaches a board the same way and none of them reaches up into another stage.

ssh.connect / ssh.connection     paramiko with verified host keys (key file or ssh-agent)
runner.install_runner            board_runner.py shipped to the board and called there over SSH
server.bootstrap / stop / status the board's TVM rpc_server, registered with the device's tracker
setup.setup                      TVM's runtime installed from this machine where the board lacks it, then bootstrap
wheels.fetch                     the board's wheels, downloaded here for its machine, glibc and Python
board_runner.py                  the standalone script run on the board (stdlib, numpy, TVM runtime)
"""
