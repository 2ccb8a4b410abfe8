"""`python -m harmonizer_deploy.cli`: the same as the `harmonizer-deploy` console script."""

from harmonizer_deploy.cli.app import main

main()
