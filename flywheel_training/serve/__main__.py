from flywheel_training.serve.server import main

main()
