"""`python -m harmonizer_deploy.cli`: the same command as `harmonizer-deploy`."""

from harmonizer_deploy.cli.app import main

main()
