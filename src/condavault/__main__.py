from condavault.cli.main import main

main()
