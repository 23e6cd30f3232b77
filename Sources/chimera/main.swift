print("chimera")
