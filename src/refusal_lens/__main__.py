from refusal_lens.cli import main

main()
