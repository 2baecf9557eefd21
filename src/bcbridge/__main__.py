from bcbridge.cli import main

main()
