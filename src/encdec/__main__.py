from encdec.cli import main

main()
