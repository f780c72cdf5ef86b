from docqa.cli import console

console()
